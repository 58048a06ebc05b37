use super::*;
use crate::test_support::entry;

fn put(tier: &MemoryTier, key: &str, body_len: usize, tags: &[&str]) -> bool {
    tier.insert(CacheKey::of(key), Arc::new(entry(key, body_len, tags)))
}

fn has(tier: &MemoryTier, key: &str) -> bool {
    tier.peek(&CacheKey::of(key)).is_some()
}

#[test]
fn small_budgets_get_fewer_shards() {
    assert_eq!(MemoryTier::new(1 << 30, 1 << 20).shards(), 16);
    assert_eq!(MemoryTier::new(4 << 20, 1 << 10).shards(), 4, "no shard under 1 MiB");
    assert_eq!(MemoryTier::new(64 << 20, 4 << 20).shards(), 2, "each shard holds eight of the largest objects");
    assert_eq!(MemoryTier::new(100_000, 10_000).shards(), 1);
    let tier = MemoryTier::with_shards(1_000, 5_000, 4);
    assert_eq!((tier.budget(), tier.max_object(), tier.shards()), (1_000, 250, 4));
}

#[test]
fn lookups_count_hits_and_misses() {
    let tier = MemoryTier::with_shards(1 << 20, 1 << 16, 2);
    assert!(put(&tier, "/a", 10, &[]));
    assert!(tier.get(&CacheKey::of("/a")).is_some());
    assert!(tier.get(&CacheKey::of("/b")).is_none());
    assert!(has(&tier, "/a"), "peek counts nothing");
    let stats = tier.stats();
    assert_eq!((stats.hits, stats.misses, stats.inserts, stats.evictions), (1, 1, 1, 0));
    assert!((stats.hit_ratio() - 0.5).abs() < 1e-9);
    assert_eq!(tier.len(), 1);
    assert_eq!(tier.bytes(), entry("/a", 10, &[]).weight());
    assert_eq!(tier.remove(&CacheKey::of("/a")).map(|e| e.key.clone()), Some("/a".to_owned()));
    assert!(tier.is_empty());
    assert_eq!(tier.bytes(), 0);
}

#[test]
fn entries_over_max_object_are_refused_and_the_older_version_goes() {
    let tier = MemoryTier::with_shards(1 << 20, 10_000, 1);
    assert!(put(&tier, "/a", 1_000, &["t"]));
    assert!(!put(&tier, "/a", 20_000, &["t"]));
    assert!(!has(&tier, "/a"), "a stale version must not outlive a refused newer one");
    assert_eq!(tier.stats().rejected, 1);
    assert_eq!(tier.bytes(), 0);
    assert_eq!(tier.purge_tag("t"), 0, "its tags went with it");
}

#[test]
fn the_budget_is_never_exceeded() {
    let tier = MemoryTier::with_shards(200_000, 50_000, 4);
    let mut rng = fastrand::Rng::with_seed(3);
    for i in 0..3_000 {
        let key = format!("/obj/{}", rng.u32(0..300));
        put(&tier, &key, rng.usize(0..30_000), &["all"]);
        if i % 4 == 1 {
            tier.get(&CacheKey::of(&key));
        }
        assert!(tier.bytes() <= tier.budget(), "{} > {}", tier.bytes(), tier.budget());
    }
    let stats = tier.stats();
    assert!(stats.evictions > 0 && stats.inserts == 3_000 && stats.rejected == 0, "{stats:?}");
    let len = tier.len();
    assert_eq!(tier.purge_tag("all"), len, "evicted entries left the tag index");
    assert!(tier.is_empty());
}

#[test]
fn a_scan_does_not_flush_the_hot_set() {
    let weight = entry("/hot/00", 1_000, &[]).weight();
    let tier = MemoryTier::with_shards(weight * 100, weight * 2, 1);
    for i in 0..50 {
        let key = format!("/hot/{i:02}");
        assert!(put(&tier, &key, 1_000, &[]));
        assert!(tier.get(&CacheKey::of(&key)).is_some());
    }
    for i in 0..5_000 {
        put(&tier, &format!("/scan/{i:04}"), 1_000, &[]);
    }
    assert!((0..50).all(|i| has(&tier, &format!("/hot/{i:02}"))), "the hot set survived a scan 50 times the cache");
    assert!(!has(&tier, "/scan/0000"));
    assert!(tier.bytes() <= tier.budget());
}

#[test]
fn purge_by_tag_removes_every_tagged_entry_across_shards() {
    let tier = MemoryTier::with_shards(1 << 20, 1 << 16, 4);
    for i in 0..40 {
        let tags: &[&str] = if i % 2 == 1 { &["odd", "all"] } else { &["all"] };
        assert!(put(&tier, &format!("/{i}"), 100, tags));
    }
    assert_eq!(tier.purge_tag("odd"), 20);
    assert_eq!(tier.len(), 20);
    assert_eq!(tier.purge_tag("odd"), 0);
    assert!(!has(&tier, "/1") && has(&tier, "/2"));
    assert_eq!(tier.purge_tag("all"), 20, "the purged entries left the other tags' sets");
    assert!(tier.is_empty());
    assert_eq!(tier.purge_tag("nothing"), 0);
}

#[test]
fn a_new_version_takes_the_place_of_the_old_ones_tags() {
    let tier = MemoryTier::with_shards(1 << 20, 1 << 16, 1);
    assert!(put(&tier, "/a", 10, &["v1", "both"]));
    assert!(put(&tier, "/a", 20, &["v2", "both"]));
    assert_eq!(tier.len(), 1);
    assert_eq!(tier.bytes(), entry("/a", 20, &["v2", "both"]).weight());
    assert_eq!(tier.purge_tag("v1"), 0);
    assert_eq!(tier.purge_tag("both"), 1);
    assert_eq!(tier.purge_tag("v2"), 0);
}

#[test]
fn concurrent_readers_and_writers_keep_the_books() {
    let tier = MemoryTier::with_shards(100_000, 10_000, 4);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let tier = &tier;
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t);
                for _ in 0..2_000 {
                    let key = format!("/{}", rng.u32(0..200));
                    if tier.get(&CacheKey::of(&key)).is_none() {
                        put(tier, &key, rng.usize(0..2_000), &["all"]);
                    }
                }
            });
        }
    });
    assert!(tier.bytes() <= tier.budget());
    let len = tier.len();
    assert_eq!(tier.purge_tag("all"), len);
    assert_eq!(tier.bytes(), 0);
}
