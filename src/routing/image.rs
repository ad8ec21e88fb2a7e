//! Which backend channels a route can produce (its image), and whether two routes on one
//! backend can produce the same one.
//!
//! An image is a regular language over bytes, written as a sequence of items: literal bytes,
//! and runs (a capture: one segment of channel-name bytes minus the byte that follows it in
//! the template; `**`: such segments joined by `.`). Two images intersect when the product of
//! their automata reaches a pair of accepting states; a breadth-first search finds the
//! shortest such backend channel, and the path says which capture read each byte, which
//! gives back the two client channels that would share it.

use std::collections::{HashMap, VecDeque};

use super::{Route, Segment, TemplatePart};
use crate::channel::is_name_byte;

/// A set of bytes; backend channels are ASCII, so 128 bits hold any class.
type Class = u128;

fn bit(b: u8) -> Class {
    1u128.checked_shl(u32::from(b)).unwrap_or(0)
}

fn segment_bytes() -> Class {
    (0u8..128).filter(|b| is_name_byte(*b)).fold(0, |c, b| c | bit(b))
}

#[derive(Debug, Clone, Copy)]
enum Item {
    Byte(u8),
    /// One or more bytes of `class`; with `many`, also `.` between such runs.
    Run {
        class: Class,
        many: bool,
        slot: Option<usize>,
    },
}

/// A route's image as an automaton: state `2 * i` is "before item `i`", `2 * i + 1` is
/// "inside run `i`, at least one byte read"; `2 * items.len()` accepts.
struct Image {
    items: Vec<Item>,
    identity: bool,
}

#[derive(Debug, Clone, Copy)]
struct Move {
    class: Class,
    to: usize,
    /// The item that reads the byte.
    item: usize,
}

impl Image {
    fn of(route: &Route) -> Image {
        let seg = segment_bytes();
        let mut items = Vec::new();
        match &route.template {
            Some(t) => {
                for part in t.parts() {
                    match part {
                        TemplatePart::Text(text) => items.extend(text.bytes().map(Item::Byte)),
                        TemplatePart::Capture { index, rest, stop } => items.push(Item::Run {
                            class: seg & !stop.map_or(0, bit),
                            many: *rest,
                            slot: Some(*index),
                        }),
                    }
                }
            }
            None => {
                for (k, segment) in route.pattern.segments().iter().enumerate() {
                    if k > 0 {
                        items.push(Item::Byte(b'.'));
                    }
                    match segment {
                        Segment::Literal(l) => items.extend(l.bytes().map(Item::Byte)),
                        Segment::Any | Segment::Capture(_) => {
                            items.push(Item::Run { class: seg, many: false, slot: None })
                        }
                        Segment::Rest => {
                            items.push(Item::Run { class: seg, many: true, slot: None })
                        }
                    }
                }
            }
        }
        Image { items, identity: route.template.is_none() }
    }

    fn literal_prefix(&self) -> Vec<u8> {
        self.items
            .iter()
            .map_while(|i| if let Item::Byte(b) = i { Some(*b) } else { None })
            .collect()
    }

    fn literal_suffix(&self) -> Vec<u8> {
        let mut s: Vec<u8> = self
            .items
            .iter()
            .rev()
            .map_while(|i| if let Item::Byte(b) = i { Some(*b) } else { None })
            .collect();
        s.reverse();
        s
    }

    fn states(&self) -> usize {
        2 * (self.items.len() + 1)
    }

    fn accepting(&self, state: usize) -> bool {
        let n = self.items.len();
        state == 2 * n || (state % 2 == 1 && state / 2 + 1 == n)
    }

    fn moves(&self, state: usize, out: &mut Vec<Move>) {
        out.clear();
        let i = state / 2;
        if state % 2 == 1 {
            if let Some(Item::Run { class, many, .. }) = self.items.get(i) {
                out.push(Move { class: *class, to: state, item: i });
                if *many {
                    out.push(Move { class: bit(b'.'), to: 2 * i, item: i });
                }
            }
            self.entering(i + 1, out);
        } else {
            self.entering(i, out);
        }
    }

    /// Moves that start item `i`.
    fn entering(&self, i: usize, out: &mut Vec<Move>) {
        match self.items.get(i) {
            Some(Item::Byte(b)) => out.push(Move { class: bit(*b), to: 2 * (i + 1), item: i }),
            Some(Item::Run { class, .. }) => {
                out.push(Move { class: *class, to: 2 * i + 1, item: i })
            }
            None => {}
        }
    }

    /// The capture values read along a path (`items[k]` read `bytes[k]`).
    fn captures(&self, bytes: &[u8], items: &[usize], count: usize) -> Vec<String> {
        let mut values = vec![String::new(); count];
        for (b, item) in bytes.iter().zip(items) {
            if let Some(Item::Run { slot: Some(s), .. }) = self.items.get(*item) {
                if let Some(v) = values.get_mut(*s) {
                    v.push(char::from(*b));
                }
            }
        }
        values
    }
}

/// The shortest byte string both images hold, with the item of each image that read each byte.
fn intersect(a: &Image, b: &Image) -> Option<(Vec<u8>, Vec<usize>, Vec<usize>)> {
    let nb = b.states();
    // Per product state: (previous state, byte, item of a, item of b).
    let mut parent: Vec<Option<(usize, u8, usize, usize)>> = vec![None; a.states() * nb];
    let mut seen = vec![false; a.states() * nb];
    let mut queue = VecDeque::from([0usize]);
    seen[0] = true;
    let (mut ma, mut mb) = (Vec::new(), Vec::new());
    while let Some(at) = queue.pop_front() {
        let (sa, sb) = (at / nb, at % nb);
        if a.accepting(sa) && b.accepting(sb) {
            return Some(unwind(&parent, at));
        }
        a.moves(sa, &mut ma);
        b.moves(sb, &mut mb);
        for x in &ma {
            for y in &mb {
                let both = x.class & y.class;
                let to = x.to * nb + y.to;
                if both != 0 && !seen[to] {
                    seen[to] = true;
                    parent[to] = Some((at, readable(both), x.item, y.item));
                    queue.push_back(to);
                }
            }
        }
    }
    None
}

fn unwind(
    parent: &[Option<(usize, u8, usize, usize)>],
    mut at: usize,
) -> (Vec<u8>, Vec<usize>, Vec<usize>) {
    let (mut bytes, mut ia, mut ib) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(Some((prev, byte, a, b))) = parent.get(at) {
        bytes.push(*byte);
        ia.push(*a);
        ib.push(*b);
        at = *prev;
    }
    bytes.reverse();
    ia.reverse();
    ib.reverse();
    (bytes, ia, ib)
}

/// A byte of `class`, lower-case letters first, so witnesses read like names.
fn readable(class: Class) -> u8 {
    let preferred = (b'a'..=b'z').chain(b'0'..=b'9').chain(b'A'..=b'Z');
    preferred.chain(0..128).find(|b| class & bit(*b) != 0).unwrap_or(b'?')
}

/// Two routes that can put different client channels on one backend channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collision {
    /// Positions in the rules, `earlier < later`.
    pub earlier: usize,
    pub later: usize,
    pub backend_channel: String,
    /// The client channel of `earlier` and of `later` that both travel on `backend_channel`.
    pub channels: [String; 2],
}

/// The first pair of routes on one backend whose images intersect.
///
/// Pairs are pruned before the search: images can only meet if one literal prefix is a prefix
/// of the other (and likewise for suffixes), so each route is only compared with the routes
/// whose literal prefix is a prefix of its own, found by hash look-ups.
pub(super) fn first_collision(routes: &[Route]) -> Option<Collision> {
    let images: Vec<Image> = routes.iter().map(Image::of).collect();
    let prefixes: Vec<Vec<u8>> = images.iter().map(Image::literal_prefix).collect();
    let suffixes: Vec<Vec<u8>> = images.iter().map(Image::literal_suffix).collect();
    let mut by_prefix: HashMap<(usize, &[u8]), Vec<usize>> = HashMap::new();
    for (i, r) in routes.iter().enumerate() {
        by_prefix.entry((r.backend, &prefixes[i])).or_default().push(i);
    }
    for (j, route) in routes.iter().enumerate() {
        for len in 0..=prefixes[j].len() {
            let Some(candidates) = by_prefix.get(&(route.backend, &prefixes[j][..len])) else {
                continue;
            };
            for &i in candidates {
                let same_prefix = len == prefixes[j].len();
                if i == j || (same_prefix && i > j) || (images[i].identity && images[j].identity) {
                    continue;
                }
                if !affix_compatible(&suffixes[i], &suffixes[j]) {
                    continue;
                }
                if let Some(c) = collision(routes, &images, i, j) {
                    return Some(c);
                }
            }
        }
    }
    None
}

fn affix_compatible(a: &[u8], b: &[u8]) -> bool {
    a.ends_with(b) || b.ends_with(a)
}

fn collision(routes: &[Route], images: &[Image], i: usize, j: usize) -> Option<Collision> {
    let (earlier, later) = (i.min(j), i.max(j));
    let (a, b) = (&images[earlier], &images[later]);
    let (bytes, ia, ib) = intersect(a, b)?;
    let backend_channel = String::from_utf8_lossy(&bytes).into_owned();
    let client = |route: &Route, image: &Image, items: &[usize]| match &route.template {
        None => backend_channel.clone(),
        Some(_) => {
            let count = route.pattern.capture_names().count();
            route.pattern.render(&image.captures(&bytes, items, count), "x")
        }
    };
    let channels = [client(&routes[earlier], a, &ia), client(&routes[later], b, &ib)];
    Some(Collision { earlier, later, backend_channel, channels })
}
