//! Route patterns (`room.{room}`, `*`, `**`), backend channel templates and permissions, each
//! parsed once when the rules are compiled.

use std::fmt;

use crate::channel::is_name_byte;

/// One segment of a route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Matches exactly this segment.
    Literal(Box<str>),
    /// `{name}`: any one segment, captured under `name`.
    Capture(Box<str>),
    /// `*`: any one segment.
    Any,
    /// `**`: one or more segments; only last.
    Rest,
}

/// A compiled `match` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: Box<str>,
    segments: Vec<Segment>,
}

impl Pattern {
    pub fn parse(source: &str) -> Result<Pattern, String> {
        if source.is_empty() {
            return Err("pattern is empty".into());
        }
        let parts: Vec<&str> = source.split('.').collect();
        let mut segments = Vec::with_capacity(parts.len());
        let mut names: Vec<&str> = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let segment = match *part {
                "" => return Err(format!("pattern {source:?} has an empty segment")),
                "**" if i + 1 != parts.len() => {
                    return Err(format!("pattern {source:?}: `**` may only be the last segment"))
                }
                "**" => Segment::Rest,
                "*" => Segment::Any,
                p if p.starts_with('{') && p.ends_with('}') => {
                    let name = &p[1..p.len() - 1];
                    if !is_capture_name(name) {
                        return Err(format!(
                            "pattern {source:?}: capture {p:?} needs a name of letters, digits and _"
                        ));
                    }
                    if names.contains(&name) {
                        return Err(format!("pattern {source:?} captures {{{name}}} twice"));
                    }
                    names.push(name);
                    Segment::Capture(name.into())
                }
                p => {
                    if let Some(bad) = p.bytes().find(|b| !is_name_byte(*b)) {
                        return Err(format!(
                            "pattern {source:?}: segment {p:?} has {:?}; a segment is a name, `{{capture}}`, `*` or `**`",
                            bad as char
                        ));
                    }
                    Segment::Literal(p.into())
                }
            };
            segments.push(segment);
        }
        Ok(Pattern { source: source.into(), segments })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Names of the captures, in pattern order (the order of [`Pattern::captures`]); a final
    /// `**` counts as a capture named `**`, so a template can carry what it matched.
    pub fn capture_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Capture(n) => Some(&**n),
            Segment::Rest => Some("**"),
            _ => None,
        })
    }

    /// The captured values for a channel this pattern is known to match; a final `**`
    /// captures the rest of the channel, dots included.
    pub fn captures<'c>(&self, channel: &'c str) -> Vec<&'c str> {
        let mut out = Vec::new();
        let mut offset = 0;
        let mut parts = channel.split('.');
        for segment in &self.segments {
            if let Segment::Rest = segment {
                out.push(channel.get(offset..).unwrap_or(""));
                break;
            }
            let Some(value) = parts.next() else { break };
            offset += value.len() + 1;
            if let Segment::Capture(_) = segment {
                out.push(value);
            }
        }
        out
    }

    /// The channel this pattern matches with `captures` (in [`Pattern::captures`] order); `*`
    /// segments, which capture nothing, are filled with `fill`.
    pub fn render(&self, captures: &[String], fill: &str) -> String {
        let mut values = captures.iter();
        let parts: Vec<&str> = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => &**l,
                Segment::Any => fill,
                Segment::Capture(_) | Segment::Rest => values.next().map_or(fill, |v| v.as_str()),
            })
            .collect();
        parts.join(".")
    }

    /// Whether this pattern matches `channel` (used by tests and the `route` explanation; the
    /// hot path goes through the trie).
    pub fn matches(&self, channel: &str) -> bool {
        let mut parts = channel.split('.');
        for segment in &self.segments {
            match segment {
                Segment::Rest => return parts.next().is_some(),
                Segment::Literal(l) => {
                    if parts.next() != Some(&**l) {
                        return false;
                    }
                }
                Segment::Any | Segment::Capture(_) => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }

    /// Whether every channel that `other` matches is matched by `self` too, so a later rule with
    /// pattern `other` can never be reached behind `self`.
    pub fn covers(&self, other: &Pattern) -> bool {
        let (a, b) = (&self.segments, &other.segments);
        for (i, sa) in a.iter().enumerate() {
            let Some(sb) = b.get(i) else { return false };
            match (sa, sb) {
                (Segment::Rest, _) => return true,
                (_, Segment::Rest) => return false,
                (Segment::Literal(x), Segment::Literal(y)) if x == y => {}
                (Segment::Literal(_), _) => return false,
                (Segment::Any | Segment::Capture(_), _) => {}
            }
        }
        a.len() == b.len()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn is_capture_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A backend channel template such as `im:room:{room}`.
///
/// Templates are injective by construction, so two channels of one route never share a
/// backend channel: every capture appears exactly once, placeholders are separated by text,
/// and a capture may not hold the first byte of the text that follows it (checked per channel
/// by [`Template::violation`]). A backend channel then splits back into its captures in
/// exactly one way, reading left to right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: Box<str>,
    parts: Vec<TemplatePart>,
    /// `(capture index, byte)`: a channel whose capture holds that byte is refused.
    guards: Vec<(usize, u8)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TemplatePart {
    Text(Box<str>),
    Capture {
        /// Index into the pattern's captures.
        index: usize,
        /// The final `**`: one or more segments, dots included.
        rest: bool,
        /// The first byte of the text that follows, which the capture may not contain.
        stop: Option<u8>,
    },
}

impl Template {
    /// Parses `source` against `pattern`'s captures; a template that could map two channels
    /// to one backend channel is refused.
    pub fn parse(source: &str, pattern: &Pattern) -> Result<Template, String> {
        if source.is_empty() {
            return Err("backend channel template is empty".into());
        }
        if pattern.segments.contains(&Segment::Any) {
            return Err(format!(
                "pattern {:?} has `*`; with a `channel` template, name it (`{{x}}`) and use it, or every channel it matches would share one backend channel",
                pattern.source()
            ));
        }
        let names: Vec<&str> = pattern.capture_names().collect();
        let mut used = vec![false; names.len()];
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(TemplatePart::Text(template_text(source, &rest[..open])?));
            } else if matches!(parts.last(), Some(TemplatePart::Capture { .. })) {
                return Err(format!(
                    "template {source:?} has two placeholders in a row; put text between them so the backend channel splits back into one channel"
                ));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("template {source:?} has an unclosed '{{'"));
            };
            let name = &rest[open + 1..open + close];
            let index = capture_index(source, pattern, &names, name)?;
            if std::mem::replace(&mut used[index], true) {
                return Err(format!("template {source:?} uses {{{name}}} twice"));
            }
            parts.push(TemplatePart::Capture { index, rest: name == "**", stop: None });
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("template {source:?} has a '}}' without '{{'"));
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Text(template_text(source, rest)?));
        }
        if let Some(unused) = used.iter().position(|u| !u) {
            return Err(format!(
                "template {source:?} does not use {{{}}}; every capture of {:?} must appear once, or different channels would share one backend channel",
                names[unused],
                pattern.source()
            ));
        }
        let guards = set_stops(source, &mut parts)?;
        Ok(Template { source: source.into(), parts, guards })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub(super) fn parts(&self) -> &[TemplatePart] {
        &self.parts
    }

    pub fn render(&self, captures: &[&str]) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Text(t) => out.push_str(t),
                TemplatePart::Capture { index, .. } => {
                    out.push_str(captures.get(*index).copied().unwrap_or(""))
                }
            }
        }
        out
    }

    /// The first capture (index, byte) holding the byte that follows it in the template: such
    /// a channel's backend channel would not split back uniquely, so it is refused.
    pub fn violation(&self, captures: &[&str]) -> Option<(usize, u8)> {
        self.guards
            .iter()
            .copied()
            .find(|(i, b)| captures.get(*i).is_some_and(|v| v.as_bytes().contains(b)))
    }
}

/// Template text may only hold channel-name bytes: names starting with any other byte are the
/// broker's own (see [`super::RESERVED_PREFIX`]), and no route may produce them.
fn template_text(source: &str, text: &str) -> Result<Box<str>, String> {
    match text.bytes().find(|b| !is_name_byte(*b) && *b != b'.') {
        Some(bad) => Err(format!(
            "template {source:?} has {:?}; template text is A-Z a-z 0-9 and . _ - : @ (other bytes are reserved for the broker's own channels)",
            bad as char
        )),
        None => Ok(text.into()),
    }
}

fn capture_index(
    source: &str,
    pattern: &Pattern,
    names: &[&str],
    name: &str,
) -> Result<usize, String> {
    names.iter().position(|n| *n == name).ok_or_else(|| {
        format!(
            "template {source:?} uses {{{name}}}, which pattern {:?} does not capture (captures: {})",
            pattern.source(),
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        )
    })
}

/// Records after each capture the first byte of the text that follows it, and returns the
/// per-channel guards. A `.` needs no guard after a one-segment capture (it never holds one);
/// after `{**}` it would refuse every channel of more than one segment, so it is an error.
fn set_stops(source: &str, parts: &mut [TemplatePart]) -> Result<Vec<(usize, u8)>, String> {
    let mut guards = Vec::new();
    for i in 0..parts.len() {
        let next = match parts.get(i + 1) {
            Some(TemplatePart::Text(t)) => t.bytes().next(),
            _ => None,
        };
        let Some(TemplatePart::Capture { index, rest, stop }) = parts.get_mut(i) else {
            continue;
        };
        match next {
            Some(b'.') if *rest => {
                return Err(format!(
                    "template {source:?}: {{**}} may not be followed by '.', which it holds itself; use another separator, e.g. {{**}}:"
                ))
            }
            Some(b'.') | None => {}
            Some(b) => {
                *stop = Some(b);
                guards.push((*index, b));
            }
        }
    }
    Ok(guards)
}

/// Who may subscribe to or publish on a route's channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permission {
    Anyone,
    Authenticated,
    Nobody,
    /// `user == {capture}`: only the user whose id equals that captured segment.
    UserIs {
        capture: Box<str>,
        index: usize,
    },
}

impl Permission {
    pub fn parse(source: &str, pattern: &Pattern) -> Result<Permission, String> {
        match source.trim() {
            "anyone" => Ok(Permission::Anyone),
            "authenticated" => Ok(Permission::Authenticated),
            "nobody" => Ok(Permission::Nobody),
            other => {
                let rhs = other
                    .strip_prefix("user")
                    .map(str::trim_start)
                    .and_then(|r| r.strip_prefix("=="))
                    .map(str::trim)
                    .and_then(|r| r.strip_prefix('{'))
                    .and_then(|r| r.strip_suffix('}'));
                let Some(name) = rhs else {
                    return Err(format!(
                        "permission {source:?} is not one of: anyone, authenticated, nobody, user == {{capture}}"
                    ));
                };
                let Some(index) = pattern.capture_names().position(|n| n == name) else {
                    return Err(format!(
                        "permission {source:?} names {{{name}}}, which pattern {:?} does not capture",
                        pattern.source()
                    ));
                };
                Ok(Permission::UserIs { capture: name.into(), index })
            }
        }
    }

    /// Whether `user` (None: anonymous) is allowed, given the channel's captures.
    pub fn allows(&self, user: Option<&str>, captures: &[&str]) -> bool {
        match self {
            Permission::Anyone => true,
            Permission::Authenticated => user.is_some(),
            Permission::Nobody => false,
            Permission::UserIs { index, .. } => {
                matches!((user, captures.get(*index)), (Some(u), Some(c)) if u == *c)
            }
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Permission::Anyone => f.write_str("anyone"),
            Permission::Authenticated => f.write_str("authenticated"),
            Permission::Nobody => f.write_str("nobody"),
            Permission::UserIs { capture, .. } => write!(f, "user == {{{capture}}}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).expect("valid pattern")
    }

    #[test]
    fn patterns_match_as_documented() {
        assert!(p("room.{room}").matches("room.42"));
        assert!(!p("room.{room}").matches("room.42.x"));
        assert!(!p("room.{room}").matches("room"));
        assert!(p("a.*.c").matches("a.b.c"));
        assert!(p("a.**").matches("a.b.c"));
        assert!(p("a.**").matches("a.b"));
        assert!(!p("a.**").matches("a"));
        assert!(p("**").matches("anything.at.all"));
        assert_eq!(p("room.{room}.{msg}").captures("room.7.x"), vec!["7", "x"]);
        assert_eq!(p("a.{x}.**").captures("a.1.b.c"), vec!["1", "b.c"]);
        assert_eq!(p("a.{x}.**").capture_names().collect::<Vec<_>>(), vec!["x", "**"]);
    }

    #[test]
    fn bad_patterns_are_explained() {
        assert!(Pattern::parse("a..b").unwrap_err().contains("empty segment"));
        assert!(Pattern::parse("a.**.b").unwrap_err().contains("last segment"));
        assert!(Pattern::parse("a.{x}.{x}").unwrap_err().contains("twice"));
        assert!(Pattern::parse("a.{}").unwrap_err().contains("needs a name"));
        assert!(Pattern::parse("a.b c").unwrap_err().contains("' '"));
    }

    #[test]
    fn templates_use_known_captures_only() {
        let pat = p("room.{room}");
        let t = Template::parse("im:room:{room}", &pat).expect("template");
        assert_eq!(t.render(&["42"]), "im:room:42");
        let err = Template::parse("im:{nope}", &pat).unwrap_err();
        assert!(err.contains("{nope}") && err.contains("room"), "{err}");
    }

    #[test]
    fn templates_that_could_merge_channels_are_refused() {
        let err = |pat: &str, t: &str| Template::parse(t, &p(pat)).unwrap_err();
        assert!(err("alias.{x}", "common").contains("does not use {x}"));
        assert!(err("a.**", "app").contains("does not use {**}"));
        assert!(err("a.*.{x}", "p:{x}").contains("has `*`"));
        assert!(err("a.{x}", "{x}:{x}").contains("twice"));
        assert!(err("a.{x}.{y}", "{x}{y}").contains("two placeholders in a row"));
        assert!(err("a.**", "{**}.end").contains("may not be followed by '.'"));
        assert!(err("a.{x}", "#sys:{x}").contains("'#'"));
        assert!(err("a.{x}", "p {x}").contains("' '"));
        let t = Template::parse("app:{**}", &p("**")).expect("namespaced catch-all");
        assert_eq!(t.render(&p("**").captures("a.b.c")), "app:a.b.c");
        let t = Template::parse("{y}.{x}", &p("a.{x}.{y}")).expect("reordered captures");
        assert_eq!(t.render(&["1", "2"]), "2.1");
        assert_eq!(t.violation(&["1", "2"]), None);
    }

    #[test]
    fn permissions_parse_and_decide() {
        let pat = p("user.{id}");
        let perm = Permission::parse("user == {id}", &pat).expect("perm");
        assert!(perm.allows(Some("alice"), &["alice"]));
        assert!(!perm.allows(Some("bob"), &["alice"]));
        assert!(!perm.allows(None, &["alice"]));
        assert!(Permission::parse("user=={id}", &pat).is_ok());
        assert!(Permission::parse("user == {x}", &pat).is_err());
        assert!(Permission::parse("everyone", &pat).is_err());
        assert!(Permission::Authenticated.allows(Some("a"), &[]));
        assert!(!Permission::Authenticated.allows(None, &[]));
        assert!(!Permission::Nobody.allows(Some("a"), &[]));
    }

    #[test]
    fn covering_detects_shadowed_rules() {
        assert!(p("**").covers(&p("room.{x}")));
        assert!(p("room.*").covers(&p("room.lobby")));
        assert!(!p("room.lobby").covers(&p("room.*")));
        assert!(p("room.**").covers(&p("room.**")));
        assert!(!p("room.*").covers(&p("room.**")));
        assert!(!p("a.b").covers(&p("a.b.c")));
    }
}
