//! The routing core: compiled rules that turn a channel name into a [`Route`] (backend, backend
//! channel, permissions, limits) or no route. Pure: no I/O, swapped atomically on reload.
//!
//! Rules are tried "first match wins", but resolution does not scan them in order: patterns
//! are compiled into a segment trie whose nodes remember the smallest rule index below them,
//! so a lookup visits only branches that could still hold an earlier match.

mod pattern;
mod trie;

use std::sync::Arc;

pub use pattern::{Pattern, Permission, Segment, Template};

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

    pub fn may_subscribe(&self, user: Option<&str>) -> bool {
        self.route.subscribe.allows(user, &self.captures)
    }

    pub fn may_publish(&self, user: Option<&str>) -> bool {
        self.route.publish.allows(user, &self.captures)
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
        }
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
}
