//! The presence section of the conformance suite: the contract of [`crate::presence`], checked
//! on every backend whose `has_presence()` is true.
//!
//! Lease expiry is checked with a short real TTL and real sleeps, because the Redis backends
//! expire on Redis's clock, which paused tokio time cannot move.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::{unique, Pair};
use crate::{Backend, Changes, Member, Roster};

/// Lease of the checks that must not see anything expire.
pub const LONG: Duration = Duration::from_secs(60);

/// Lease of the expiry checks: long enough for a few calls on a loaded machine, short enough
/// to wait out.
pub const SHORT: Duration = Duration::from_millis(400);

/// Runs every presence check, each on a fresh pair from `factory`. Panics if the backend has
/// no presence.
pub async fn run_presence<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Pair>,
{
    let p = factory().await;
    assert!(
        p.a.has_presence() && p.b.has_presence(),
        "run_presence needs a backend with has_presence() == true ({} says false)",
        p.a.kind()
    );
    members_from_both_nodes_are_counted_and_listed(p).await;
    updates_report_what_they_changed(factory().await).await;
    one_user_on_several_connections_counts_once(factory().await).await;
    paging_returns_every_steady_member_once_while_others_come_and_go(factory().await).await;
    a_lease_that_is_not_renewed_ends_and_is_reported_once(factory().await).await;
    a_renewed_lease_keeps_the_member(factory().await).await;
    channels_are_independent(factory().await).await;
}

fn member(conn: &str, user: Option<&str>) -> Member {
    Member::new(conn, user)
}

async fn update(
    b: &dyn Backend,
    ch: &str,
    add: &[Member],
    remove: &[&str],
    ttl: Duration,
) -> Changes {
    let remove: Vec<Arc<str>> = remove.iter().map(|c| Arc::from(*c)).collect();
    b.presence_update(ch, add, &remove, ttl).await.expect("presence_update")
}

async fn read(b: &dyn Backend, ch: &str, after: Option<&str>, limit: usize) -> Roster {
    b.presence_read(ch, after, limit).await.expect("presence_read")
}

/// Every member, read page by page of `limit`.
async fn read_all(b: &dyn Backend, ch: &str, limit: usize) -> Vec<Member> {
    let mut all = Vec::new();
    let mut after: Option<Arc<str>> = None;
    loop {
        let page = read(b, ch, after.as_deref(), limit).await;
        assert!(page.members.len() <= limit, "a page holds at most limit members");
        all.extend(page.members);
        match page.next {
            Some(next) => after = Some(next),
            None => return all,
        }
    }
}

async fn members_from_both_nodes_are_counted_and_listed(p: Pair) {
    let ch = unique("presence.both");
    update(&*p.a, &ch, &[member("a:2", Some("alice")), member("a:1", None)], &[], LONG).await;
    update(&*p.b, &ch, &[member("b:1", Some("bob"))], &[], LONG).await;
    for (node, b) in [("a", &p.a), ("b", &p.b)] {
        let r = read(&**b, &ch, None, 10).await;
        assert_eq!((r.connections, r.users), (3, 2), "counts read on node {node}");
        let conns: Vec<&str> = r.members.iter().map(|m| &*m.conn).collect();
        assert_eq!(conns, ["a:1", "a:2", "b:1"], "members in conn order, read on node {node}");
        assert_eq!(r.members[1].user.as_deref(), Some("alice"), "the member's user");
        assert_eq!(r.members[0].user, None, "an anonymous member has no user");
        assert_eq!(r.next, None, "one page holds them all");
    }
    let counts = read(&*p.b, &ch, None, 0).await;
    assert_eq!((counts.connections, counts.users), (3, 2), "counts alone");
    assert!(counts.members.is_empty() && counts.next.is_none(), "limit 0 lists nobody");
}

async fn updates_report_what_they_changed(p: Pair) {
    let ch = unique("presence.changes");
    let x = member("a:x", Some("xavier"));
    let c = update(&*p.a, &ch, std::slice::from_ref(&x), &[], LONG).await;
    assert_eq!(c.joined, vec![x.clone()], "a new member joined");
    let c = update(&*p.b, &ch, std::slice::from_ref(&x), &[], LONG).await;
    assert!(c.joined.is_empty(), "renewing a present member is no join: {c:?}");
    let c = update(&*p.b, &ch, &[], &["a:x", "a:nobody"], LONG).await;
    assert_eq!(c.left, vec![x.clone()], "only a present member leaves");
    let c = update(&*p.a, &ch, &[], &["a:x"], LONG).await;
    assert!(c.left.is_empty(), "leaving twice is one leave: {c:?}");
    let r = read(&*p.a, &ch, None, 10).await;
    assert_eq!((r.connections, r.users, r.members.len()), (0, 0, 0), "nobody is left");
    // One call that removes and adds: both happen.
    let y = member("a:y", None);
    update(&*p.a, &ch, std::slice::from_ref(&x), &[], LONG).await;
    let c = update(&*p.a, &ch, std::slice::from_ref(&y), &["a:x"], LONG).await;
    assert_eq!((c.joined, c.left), (vec![y], vec![x]), "one call, both changes");
}

async fn one_user_on_several_connections_counts_once(p: Pair) {
    let ch = unique("presence.users");
    let alice = |conn: &str| member(conn, Some("alice"));
    update(&*p.a, &ch, &[alice("a:1"), alice("a:2")], &[], LONG).await;
    update(&*p.b, &ch, &[alice("b:1"), member("b:2", Some("bob")), member("b:3", None)], &[], LONG)
        .await;
    let r = read(&*p.a, &ch, None, 0).await;
    assert_eq!((r.connections, r.users), (5, 2), "alice three times, bob once, one anonymous");
    update(&*p.a, &ch, &[], &["a:1", "a:2"], LONG).await;
    let r = read(&*p.a, &ch, None, 0).await;
    assert_eq!((r.connections, r.users), (3, 2), "alice is still there on b:1");
    update(&*p.b, &ch, &[], &["b:1"], LONG).await;
    let r = read(&*p.b, &ch, None, 0).await;
    assert_eq!((r.connections, r.users), (2, 1), "alice's last connection left");
}

async fn paging_returns_every_steady_member_once_while_others_come_and_go(p: Pair) {
    let ch = unique("presence.paging");
    let conn = |node: &str, i: usize| format!("{node}:{i:05}");
    let steady: Vec<Member> = (0..300).map(|i| member(&conn("s", i), Some("u"))).collect();
    for chunk in steady.chunks(100) {
        update(&*p.a, &ch, chunk, &[], LONG).await;
    }
    let mut seen = Vec::new();
    let mut after: Option<Arc<str>> = None;
    let mut round = 0;
    loop {
        let page = read(&*p.b, &ch, after.as_deref(), 40).await;
        seen.extend(page.members.iter().map(|m| m.conn.clone()));
        // Between pages, members come (before and after the cursor) and go.
        let comers = [member(&conn("c", round), None), member(&conn("t", round), None)];
        update(&*p.a, &ch, &comers, &[], LONG).await;
        if round > 0 {
            update(&*p.b, &ch, &[], &[&conn("c", round - 1), &conn("t", round - 1)], LONG).await;
        }
        round += 1;
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let unique_seen: BTreeSet<&Arc<str>> = seen.iter().collect();
    assert_eq!(unique_seen.len(), seen.len(), "no member is returned twice");
    for m in &steady {
        assert!(unique_seen.contains(&m.conn), "steady member {} was skipped", m.conn);
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "pages come in conn order");
    let all = read_all(&*p.a, &ch, 1000).await;
    assert_eq!(all.len(), 302, "300 steady members and the last two comers");
}

async fn a_lease_that_is_not_renewed_ends_and_is_reported_once(p: Pair) {
    let ch = unique("presence.lease");
    update(&*p.a, &ch, &[member("a:1", Some("alice")), member("a:2", None)], &[], SHORT).await;
    update(&*p.b, &ch, &[member("b:1", Some("alice"))], &[], LONG).await;
    tokio::time::sleep(SHORT + Duration::from_millis(300)).await;
    let r = read(&*p.b, &ch, None, 10).await;
    assert_eq!((r.connections, r.users), (1, 1), "a's members are gone; alice stays on b:1");
    assert_eq!(r.members, vec![member("b:1", Some("alice"))]);
    let mut expired = r.expired.clone();
    expired.sort();
    assert_eq!(expired, vec![member("a:1", Some("alice")), member("a:2", None)], "reported");
    let again = update(&*p.a, &ch, &[], &[], LONG).await;
    assert!(again.expired.is_empty(), "an expired member is reported once: {again:?}");
    // The node of an expired member may come back and add it again: a fresh join.
    let back = update(&*p.a, &ch, &[member("a:1", Some("alice"))], &[], LONG).await;
    assert_eq!(back.joined, vec![member("a:1", Some("alice"))]);
    let r = read(&*p.a, &ch, None, 0).await;
    assert_eq!((r.connections, r.users), (2, 1));
}

async fn a_renewed_lease_keeps_the_member(p: Pair) {
    let ch = unique("presence.renew");
    let m = [member("a:1", None)];
    update(&*p.a, &ch, &m, &[], SHORT).await;
    for _ in 0..6 {
        tokio::time::sleep(SHORT / 4).await;
        let c = update(&*p.a, &ch, &m, &[], SHORT).await;
        assert!(c.joined.is_empty() && c.expired.is_empty(), "renewed in time: {c:?}");
    }
    let r = read(&*p.b, &ch, None, 10).await;
    assert_eq!(r.connections, 1, "renewed for longer than one lease, still present");
}

async fn channels_are_independent(p: Pair) {
    let (x, y) = (unique("presence.x"), unique("presence.y"));
    update(&*p.a, &x, &[member("a:1", Some("alice"))], &[], LONG).await;
    update(&*p.b, &y, &[member("b:1", Some("bob")), member("b:2", None)], &[], LONG).await;
    let rx = read(&*p.b, &x, None, 10).await;
    let ry = read(&*p.a, &y, None, 10).await;
    assert_eq!((rx.connections, rx.users), (1, 1));
    assert_eq!((ry.connections, ry.users), (2, 1));
    let r = read(&*p.a, &unique("presence.empty"), None, 10).await;
    assert_eq!(r, Roster::default(), "a channel nobody joined is empty");
}
