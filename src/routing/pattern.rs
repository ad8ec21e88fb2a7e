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

    /// Names of the captures, in pattern order (the order of [`Pattern::captures`]).
    pub fn capture_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Capture(n) => Some(&**n),
            _ => None,
        })
    }

    /// The captured values for a channel this pattern is known to match.
    pub fn captures<'c>(&self, channel: &'c str) -> Vec<&'c str> {
        self.segments
            .iter()
            .zip(channel.split('.'))
            .filter_map(|(s, v)| matches!(s, Segment::Capture(_)).then_some(v))
            .collect()
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<TemplatePart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TemplatePart {
    Text(Box<str>),
    /// Index into the pattern's captures.
    Capture(usize),
}

impl Template {
    /// Parses `source` against `pattern`'s captures; unknown captures are errors.
    pub fn parse(source: &str, pattern: &Pattern) -> Result<Template, String> {
        if source.is_empty() {
            return Err("backend channel template is empty".into());
        }
        let names: Vec<&str> = pattern.capture_names().collect();
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(TemplatePart::Text(rest[..open].into()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("template {source:?} has an unclosed '{{'"));
            };
            let name = &rest[open + 1..open + close];
            let Some(index) = names.iter().position(|n| *n == name) else {
                return Err(format!(
                    "template {source:?} uses {{{name}}}, which pattern {:?} does not capture (captures: {})",
                    pattern.source(),
                    if names.is_empty() { "none".to_string() } else { names.join(", ") }
                ));
            };
            parts.push(TemplatePart::Capture(index));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("template {source:?} has a '}}' without '{{'"));
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Text(rest.into()));
        }
        Ok(Template { parts })
    }

    pub fn render(&self, captures: &[&str]) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Text(t) => out.push_str(t),
                TemplatePart::Capture(i) => out.push_str(captures.get(*i).copied().unwrap_or("")),
            }
        }
        out
    }
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
