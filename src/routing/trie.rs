//! A segment trie over route patterns that finds the earliest matching rule.

use std::collections::HashMap;

use super::Segment;

#[derive(Debug, Clone)]
pub(super) struct Node {
    literals: HashMap<Box<str>, Node>,
    /// `*` and `{capture}`: any one segment.
    any: Option<Box<Node>>,
    /// Rule whose pattern ends exactly here.
    end: Option<u32>,
    /// Rule with `**` here: matches one or more remaining segments.
    rest: Option<u32>,
    /// Smallest rule index anywhere in this subtree, to prune branches that cannot win.
    min: u32,
}

impl Default for Node {
    fn default() -> Node {
        Node { literals: HashMap::new(), any: None, end: None, rest: None, min: u32::MAX }
    }
}

impl Node {
    pub(super) fn insert(&mut self, segments: &[Segment], rule: u32) {
        self.min = self.min.min(rule);
        let Some((first, rest)) = segments.split_first() else {
            self.end = Some(self.end.map_or(rule, |e| e.min(rule)));
            return;
        };
        match first {
            Segment::Rest => self.rest = Some(self.rest.map_or(rule, |r| r.min(rule))),
            Segment::Literal(l) => self.literals.entry(l.clone()).or_default().insert(rest, rule),
            Segment::Any | Segment::Capture(_) => {
                self.any.get_or_insert_with(Box::default).insert(rest, rule)
            }
        }
    }

    pub(super) fn first_match(&self, segments: &[&str]) -> Option<u32> {
        let mut best = u32::MAX;
        self.search(segments, &mut best);
        (best != u32::MAX).then_some(best)
    }

    fn search(&self, segments: &[&str], best: &mut u32) {
        if self.min >= *best {
            return;
        }
        let Some((first, rest)) = segments.split_first() else {
            if let Some(e) = self.end {
                *best = (*best).min(e);
            }
            return;
        };
        if let Some(r) = self.rest {
            *best = (*best).min(r);
        }
        if let Some(child) = self.literals.get(*first) {
            child.search(rest, best);
        }
        if let Some(any) = &self.any {
            any.search(rest, best);
        }
    }
}
