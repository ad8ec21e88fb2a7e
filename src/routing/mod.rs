//! The routing core: compiled rules that turn a channel name into a [`Route`] (backend, backend
//! channel, permissions, limits) or no route. Pure: no I/O, swapped atomically on reload.
//!
//! Rules are tried "first match wins", but resolution does not scan them in order: patterns
//! are compiled into a segment trie whose nodes remember the smallest rule index below them,
//! so a lookup visits only branches that could still hold an earlier match.
//!
//! Backend channels belong to exactly one route: templates are injective (see [`Template`]),
//! and [`Rules::collision`] finds two routes on one backend that could produce the same
//! backend channel, which the config refuses. Routes only ever produce channel-name bytes, so
//! the broker's own channels and keys, named under [`RESERVED_PREFIX`], are out of their reach.

mod image;
mod pattern;
mod trie;

use std::sync::Arc;

pub use image::Collision;
use pattern::TemplatePart;
pub use pattern::{Pattern, Permission, Segment, Template};

/// The prefix of every backend channel or key the broker uses for itself (node inboxes,
/// history, presence). Its first byte is not a channel-name byte, and routes only produce
/// channel-name bytes, so no client channel can reach these names.
pub const RESERVED_PREFIX: &str = "#switchyard:";

/// The broker's own name for `kind` (e.g. `inbox`) of `id`: `#switchyard:<kind>:<id>`.
pub fn internal_name(kind: &str, id: &str) -> String {
    format!("{RESERVED_PREFIX}{kind}:{id}")
}

/// The inbox channel of node `node`, which carries `send` frames to its connections: under the
/// reserved prefix, so no route can produce it and no client can read or write another
/// connection's `send` traffic.
pub fn inbox_channel(node: &str) -> String {
    internal_name("inbox", node)
}

use crate::channel::ChannelName;

/// One compiled `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the config file (0-based); earlier wins.
    pub index: usize,
    pub pattern: Pattern,
    /// Index of the backend in the broker's backend list.
    pub backend: usize,
    pub backend_name: Arc<str>,
    /// Backend channel template; `None`: the channel name itself.
    pub template: Option<Template>,
    pub subscribe: Permission,
    pub publish: Permission,
    /// Largest `data` a publish may carry on this route, in bytes of JSON.
    pub max_message_bytes: usize,
    /// What the route's channels keep; `None`: no history (`history_size = 0`).
    pub history: Option<HistorySettings>,
    /// Who is subscribed, when the route keeps presence (`presence = true`).
    pub presence: Option<PresenceSettings>,
}

/// A route's presence: how long a member outlives its node, and whether subscribers are told
/// of joins and leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceSettings {
    /// A member's lease (`presence_ttl_s`): a dead node's members vanish within it.
    pub ttl: std::time::Duration,
    /// `join_leave`: subscribers receive `presence_diff` frames.
    pub join_leave: bool,
}

/// A route's history: how much each channel keeps, and how much a client may recover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistorySettings {
    pub retention: switchyard_backend::Retention,
    /// Most messages a resubscribing client is given back; past it, `recovered: false`.
    pub recovery_max: usize,
}

/// Compiled routing rules.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    routes: Vec<Route>,
    trie: trie::Node,
}

/// The outcome of resolving a channel: its route and the captured segments.
#[derive(Debug)]
pub struct Resolved<'r, 'c> {
    pub route: &'r Route,
    pub captures: Vec<&'c str>,
}

impl Resolved<'_, '_> {
    /// The backend channel this client channel travels on.
    pub fn backend_channel(&self, channel: &ChannelName) -> String {
        match &self.route.template {
            Some(t) => t.render(&self.captures),
            None => channel.as_str().to_owned(),
        }
    }

    /// Why this channel is refused whoever asks, if it is: one of its captures holds the byte
    /// that follows that capture in the template, so its backend channel could be another
    /// channel's.
    pub fn refusal(&self) -> Option<String> {
        let (index, byte) = self.route.template.as_ref()?.violation(&self.captures)?;
        let name = self.route.pattern.capture_names().nth(index).unwrap_or("?");
        Some(format!(
            "{{{name}}} = {:?} holds {:?}, which follows {{{name}}} in the backend channel template {:?} of routes[{}]; such a channel could share its backend channel with another",
            self.captures.get(index).copied().unwrap_or(""),
            byte as char,
            self.route.template.as_ref().map_or("", |t| t.source()),
            self.route.index,
        ))
    }

    fn refused(&self) -> bool {
        self.route.template.as_ref().is_some_and(|t| t.violation(&self.captures).is_some())
    }

    pub fn may_subscribe(&self, user: Option<&str>) -> bool {
        !self.refused() && self.route.subscribe.allows(user, &self.captures)
    }

    pub fn may_publish(&self, user: Option<&str>) -> bool {
        !self.refused() && self.route.publish.allows(user, &self.captures)
    }

    /// The capture names with their values, for explanations.
    pub fn named_captures(&self) -> Vec<(&str, &str)> {
        self.route.pattern.capture_names().zip(self.captures.iter().copied()).collect()
    }
}

impl Rules {
    pub fn new(routes: Vec<Route>) -> Rules {
        let mut trie = trie::Node::default();
        for (i, r) in routes.iter().enumerate() {
            trie.insert(r.pattern.segments(), i as u32);
        }
        Rules { routes, trie }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The first rule that matches `channel`, with its captures.
    pub fn resolve<'r, 'c>(&'r self, channel: &'c ChannelName) -> Option<Resolved<'r, 'c>> {
        let segments: Vec<&str> = channel.segments().collect();
        let index = self.trie.first_match(&segments)?;
        let route = self.routes.get(index as usize)?;
        let captures = route.pattern.captures(channel.as_str());
        Some(Resolved { route, captures })
    }

    /// Two routes on one backend that could carry different client channels on the same
    /// backend channel, with the shortest such backend channel; `None` when every backend
    /// channel belongs to one route.
    pub fn collision(&self) -> Option<Collision> {
        image::first_collision(&self.routes)
    }

    /// Pairs `(shadowed, by)`: rules that can never match because an earlier rule matches
    /// every channel they do.
    pub fn shadowed(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (j, later) in self.routes.iter().enumerate() {
            if let Some(i) = self.routes[..j].iter().position(|e| e.pattern.covers(&later.pattern))
            {
                out.push((j, i));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn route(index: usize, pattern: &str) -> Route {
        Route {
            index,
            pattern: Pattern::parse(pattern).expect("pattern"),
            backend: 0,
            backend_name: Arc::from("local"),
            template: None,
            subscribe: Permission::Anyone,
            publish: Permission::Anyone,
            max_message_bytes: 1024,
            history: None,
            presence: None,
        }
    }

    /// A route with `template` (`None`: identity) on `backend`.
    fn mapped(index: usize, pattern: &str, template: Option<&str>, backend: usize) -> Route {
        let mut r = route(index, pattern);
        r.template = template.map(|t| Template::parse(t, &r.pattern).expect("template"));
        r.backend = backend;
        r
    }

    fn mapped_rules(routes: &[(&str, Option<&str>)]) -> Rules {
        Rules::new(routes.iter().enumerate().map(|(i, (p, t))| mapped(i, p, *t, 0)).collect())
    }

    fn rules(patterns: &[&str]) -> Rules {
        Rules::new(patterns.iter().enumerate().map(|(i, p)| route(i, p)).collect())
    }

    fn hit(r: &Rules, channel: &str) -> Option<usize> {
        let c = ChannelName::parse(channel).expect("channel");
        r.resolve(&c).map(|x| x.route.index)
    }

    #[test]
    fn first_match_wins() {
        let r = rules(&["room.lobby", "room.{id}", "room.**", "**"]);
        assert_eq!(hit(&r, "room.lobby"), Some(0));
        assert_eq!(hit(&r, "room.7"), Some(1));
        assert_eq!(hit(&r, "room.7.typing"), Some(2));
        assert_eq!(hit(&r, "other"), Some(3));
    }

    #[test]
    fn earlier_wildcard_beats_later_literal() {
        let r = rules(&["a.*", "a.b", "a.b.**"]);
        assert_eq!(hit(&r, "a.b"), Some(0));
        assert_eq!(hit(&r, "a.b.c"), Some(2));
        assert_eq!(hit(&r, "b"), None);
    }

    #[test]
    fn resolution_agrees_with_a_linear_scan() {
        let patterns =
            ["a.b.c", "a.*.c", "a.**", "*.b", "x.{y}.z", "**", "a.b", "*.*.*", "q.**", "a.{k}"];
        for n in 1..=patterns.len() {
            let r = rules(&patterns[..n]);
            for ch in ["a", "a.b", "a.b.c", "a.x.c", "x.y.z", "q.r", "z.b", "a.b.c.d", "m.n.o"] {
                let c = ChannelName::parse(ch).expect("channel");
                let linear = r.routes().iter().position(|rt| rt.pattern.matches(ch));
                assert_eq!(hit(&r, ch), linear, "{ch} with {n} rules");
                if let Some(res) = r.resolve(&c) {
                    assert_eq!(res.captures.len(), res.route.pattern.capture_names().count());
                }
            }
        }
    }

    #[test]
    fn shadowed_rules_are_reported() {
        let r = rules(&["room.*", "room.lobby", "chat.{id}", "**", "late"]);
        assert_eq!(r.shadowed(), vec![(1, 0), (4, 3)]);
    }

    fn collision(r: &Rules) -> Option<(usize, usize, String, [String; 2])> {
        r.collision().map(|c| (c.earlier, c.later, c.backend_channel, c.channels))
    }

    fn names(a: &str, b: &str) -> [String; 2] {
        [a.to_string(), b.to_string()]
    }

    #[test]
    fn a_catch_all_without_template_collides_with_a_private_template() {
        let r = mapped_rules(&[("user.{id}", Some("im:user:{id}")), ("**", None)]);
        assert_eq!(collision(&r), Some((0, 1, "im:user:a".into(), names("user.a", "im:user:a"))));
        let r = mapped_rules(&[("user.{id}", Some("im:user:{id}")), ("**", Some("im:{**}"))]);
        assert_eq!(collision(&r), Some((0, 1, "im:user:a".into(), names("user.a", "user:a"))));
        let r = mapped_rules(&[("a.{x}", Some("p:{x}")), ("b.{y}", Some("p:{y}"))]);
        assert_eq!(collision(&r), Some((0, 1, "p:a".into(), names("a.a", "b.a"))));
    }

    #[test]
    fn namespaced_routes_and_identity_routes_do_not_collide() {
        let r = mapped_rules(&[
            ("user.{id}", Some("im:user:{id}")),
            ("room.{room}", Some("im:room:{room}")),
            ("room.{room}.typing", None),
            ("**", Some("app:{**}")),
        ]);
        assert_eq!(collision(&r), None);
        // Identity routes never share a backend channel, shadowed or not: each client
        // channel is served by one route.
        let r = mapped_rules(&[("a.*", None), ("**", None), ("a.b", None), ("*.*", None)]);
        assert_eq!(r.shadowed(), vec![(2, 0), (3, 1)]);
        assert_eq!(collision(&r), None);
    }

    #[test]
    fn routes_on_different_backends_may_produce_the_same_name() {
        let r = Rules::new(vec![
            mapped(0, "user.{id}", Some("im:user:{id}"), 0),
            mapped(1, "**", None, 1),
        ]);
        assert_eq!(collision(&r), None);
    }

    #[test]
    fn a_capture_holding_the_byte_that_follows_it_is_refused() {
        let r = mapped_rules(&[("x.{a}.{b}", Some("{a}:{b}"))]);
        let refused = ChannelName::parse("x.p:q.r").expect("channel");
        let fine = ChannelName::parse("x.p.q:r").expect("channel");
        let (bad, good) = (r.resolve(&refused).expect("route"), r.resolve(&fine).expect("route"));
        // Both would render "p:q:r": the first is the one whose split is ambiguous.
        assert_eq!(bad.backend_channel(&refused), good.backend_channel(&fine));
        let why = bad.refusal().expect("refused");
        assert!(why.contains("{a} = \"p:q\" holds ':'") && why.contains("\"{a}:{b}\""), "{why}");
        assert!(!bad.may_subscribe(Some("u")) && !bad.may_publish(Some("u")));
        assert_eq!(good.refusal(), None);
        assert!(good.may_subscribe(None));
    }

    #[test]
    fn internal_names_are_under_the_reserved_prefix() {
        assert_eq!(internal_name("inbox", "n1"), "#switchyard:inbox:n1");
        assert!(ChannelName::parse(&internal_name("inbox", "n1")).is_err());
    }

    use proptest::prelude::*;
    use proptest::test_runner::{Config as PropConfig, RngAlgorithm, TestRng, TestRunner};

    static TEXTS: [&str; 13] =
        ["", "#", "app:", "#switchyard:", "a.", ":", "x", "{", "}", "@", " ", "é", "."];
    static PATTERNS: [&str; 6] = ["{a}", "x.{a}", "{a}.**", "**", "{a}.{b}", "room.*"];
    static SEGMENTS: [&str; 6] = ["a", "b:c", "user", "x-y", "Z@q", "1"];

    /// A template source for `pattern`: text around each of its captures.
    fn template_source(pattern: &Pattern, texts: &[&str]) -> String {
        let mut source = texts[0].to_string();
        for (name, text) in pattern.capture_names().zip(&texts[1..]) {
            source.push_str(&format!("{{{name}}}{text}"));
        }
        source
    }

    proptest! {
        // Only valid templates count as cases; most generated sources are not, hence the
        // generous reject budget.
        #![proptest_config(ProptestConfig {
            cases: 1000,
            max_global_rejects: 100_000,
            ..ProptestConfig::default()
        })]

        /// However a template is written, what it renders is a backend channel name that no
        /// client channel reaches: never under the reserved prefix, only name bytes.
        #[test]
        fn no_route_renders_a_name_under_the_reserved_prefix(
            pattern in prop::sample::select(&PATTERNS[..]),
            texts in prop::collection::vec(prop::sample::select(&TEXTS[..]), 3),
            values in prop::collection::vec(
                prop::collection::vec(prop::sample::select(&SEGMENTS[..]), 1..=3),
                2,
            ),
        ) {
            let pattern = Pattern::parse(pattern).expect("pattern");
            let source = template_source(&pattern, &texts);
            let template = Template::parse(&source, &pattern);
            prop_assume!(template.is_ok());
            let template = template.expect("checked above");
            let captures: Vec<String> = pattern
                .capture_names()
                .zip(&values)
                .map(|(name, parts)| if name == "**" { parts.join(".") } else { parts.concat() })
                .collect();
            let captures: Vec<&str> = captures.iter().map(String::as_str).collect();
            let out = template.render(&captures);
            prop_assert!(!out.starts_with(RESERVED_PREFIX), "{source:?} rendered {out:?}");
            prop_assert!(
                out.bytes().all(|b| crate::channel::is_name_byte(b) || b == b'.'),
                "{source:?} rendered {out:?}"
            );
        }
    }

    type Shape = (&'static str, &'static [&'static str]);
    static SHAPES: [Shape; 6] = [
        ("u.{id}", &["im:u:{id}", "im:{id}", "{id}", "u.{id}"]),
        ("{a}.{b}", &["{a}:{b}", "im:{a}.{b}", "{b}:{a}"]),
        ("**", &["im:{**}", "{**}", "app:{**}"]),
        ("r.**", &["{**}:r", "im:u:{**}"]),
        ("*.x", &[]),
        ("u.*", &[]),
    ];

    /// Two to four routes, each a shape from [`SHAPES`] with one of its templates (three times
    /// in four) or none.
    fn rule_sets() -> impl Strategy<Value = Rules> {
        let route = (prop::sample::select(&SHAPES[..]), 0..4usize, any::<prop::sample::Index>());
        prop::collection::vec(route, 2..=4).prop_map(|routes| {
            let routes = routes.into_iter().enumerate().map(|(i, ((p, templates), k, pick))| {
                let t = (!templates.is_empty() && k > 0).then(|| *pick.get(templates));
                mapped(i, p, t, 0)
            });
            Rules::new(routes.collect())
        })
    }

    /// Client channels of up to three segments over a few awkward segment names.
    fn universe() -> Vec<String> {
        let segments = ["u", "im", "im:u", "r", "x", "a:b", "b"];
        let mut universe: Vec<String> = segments.iter().map(|s| s.to_string()).collect();
        for a in segments {
            for b in segments {
                universe.push(format!("{a}.{b}"));
                universe.push(format!("{a}.{b}.x"));
            }
        }
        universe
    }

    /// A collision's witness is real: both channels route where it says and render its name.
    fn check_witness(r: &Rules, c: &Collision) -> Result<(), TestCaseError> {
        for (k, index) in [c.earlier, c.later].into_iter().enumerate() {
            let route = &r.routes()[index];
            let ch = ChannelName::parse(&c.channels[k]).expect("witness channel");
            prop_assert!(route.pattern.matches(ch.as_str()), "{c:?}");
            let captures = route.pattern.captures(ch.as_str());
            let out = Resolved { route, captures }.backend_channel(&ch);
            prop_assert_eq!(&out, &c.backend_channel, "{:?}", c);
        }
        Ok(())
    }

    /// No collision found: no two channels of `universe` share a backend channel.
    fn check_no_sharing(r: &Rules, universe: &[String]) -> Result<(), TestCaseError> {
        let mut seen: std::collections::HashMap<String, &str> = Default::default();
        for ch in universe {
            let name = ChannelName::parse(ch).expect("channel");
            let Some(res) = r.resolve(&name) else { continue };
            if res.refusal().is_some() {
                continue;
            }
            let out = res.backend_channel(&name);
            if let Some(other) = seen.insert(out.clone(), ch) {
                prop_assert!(false, "{other} and {ch} share {out} in {:?}", r.routes());
            }
        }
        Ok(())
    }

    /// Every backend channel of every client channel in a small universe, per generated rule
    /// set: when `collision` finds nothing, no two client channels share one; when it finds
    /// one, its witness is real. The runner's seed is fixed so that the count of rule sets
    /// with and without a collision, which shows both branches were exercised, is the same
    /// on every run.
    #[test]
    fn collision_search_agrees_with_brute_force() {
        let universe = universe();
        let (found, clean) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
        let config = PropConfig { cases: 300, ..PropConfig::default() };
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
        let result = runner.run(&rule_sets(), |r| match r.collision() {
            Some(c) => {
                found.set(found.get() + 1);
                check_witness(&r, &c)
            }
            None => {
                clean.set(clean.get() + 1);
                check_no_sharing(&r, &universe)
            }
        });
        if let Err(e) = result {
            panic!("{e}");
        }
        let (found, clean) = (found.get(), clean.get());
        assert!(found > 20 && clean > 20, "found {found}, clean {clean}");
    }
}
