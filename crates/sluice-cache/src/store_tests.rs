use super::*;
use crate::test_support::{entry, TempDir};

const MIB: u64 = 1 << 20;

fn open_store(dir: &TempDir, memory_budget: u64) -> Store {
    let memory = MemoryTier::with_shards(memory_budget, memory_budget, 1);
    Store::new(memory, Some(DiskTier::open(dir.path(), MIB, MIB).unwrap()))
}

fn put(store: &Store, key: &str, body_len: usize, tags: &[&str]) -> bool {
    store.insert(Arc::new(entry(key, body_len, tags))).unwrap()
}

#[test]
fn a_disk_hit_is_promoted_to_memory() {
    let dir = TempDir::new("store-promote");
    let store = open_store(&dir, entry("/s/0", 1_000, &[]).weight() * 2);
    for i in 0..5 {
        assert!(put(&store, &format!("/s/{i}"), 1_000, &[]));
    }
    assert!(store.get_memory("/s/0").is_none(), "pushed out of memory");
    assert_eq!(store.get("/s/0").unwrap().map(|e| e.key.clone()), Some("/s/0".to_owned()));
    assert!(store.get_memory("/s/0").is_some(), "promoted");
    assert_eq!(store.disk().unwrap().stats().hits, 1);
}

#[test]
fn what_was_stored_is_there_after_a_restart() {
    let dir = TempDir::new("store-restart");
    {
        let store = open_store(&dir, MIB);
        assert!(put(&store, "/k", 100, &["t"]));
    }
    let store = open_store(&dir, MIB);
    assert!(store.get_memory("/k").is_none());
    assert_eq!(store.get("/k").unwrap().map(|e| e.body.len()), Some(100));
    assert_eq!(store.purge_tag("t").unwrap(), 1);
    assert!(store.get("/k").unwrap().is_none());
}

#[test]
fn purge_by_key_and_by_tag_reaches_both_tiers() {
    let dir = TempDir::new("store-purge");
    let store = open_store(&dir, MIB);
    for i in 0..4 {
        let tags: &[&str] = if i % 2 == 0 { &["even"] } else { &[] };
        assert!(put(&store, &format!("/p/{i}"), 10, tags));
    }
    assert_eq!(store.purge_tag("even").unwrap(), 2, "counted once though both tiers held them");
    assert!(store.get("/p/0").unwrap().is_none());
    assert!(store.remove("/p/1").unwrap());
    assert!(!store.remove("/p/1").unwrap());
    assert!(store.get("/p/1").unwrap().is_none());
    assert!(store.get("/p/3").unwrap().is_some());
    assert_eq!((store.memory().len(), store.disk().unwrap().len()), (1, 1));
}

#[test]
fn a_hash_collision_is_a_miss_not_a_wrong_response() {
    let store = Store::new(MemoryTier::with_shards(MIB, MIB, 1), None);
    // Planted under another key's hash, as a collision would place it.
    assert!(store.memory().insert(CacheKey::of("/wanted"), Arc::new(entry("/other", 10, &[]))));
    assert!(store.get("/wanted").unwrap().is_none());
    assert!(store.get_memory("/wanted").is_none());
    assert!(store.get_memory("/other").is_none());
}

#[test]
fn objects_too_big_for_memory_still_go_to_disk() {
    let dir = TempDir::new("store-big");
    let memory = MemoryTier::with_shards(MIB, 10_000, 1);
    let store = Store::new(memory, Some(DiskTier::open(dir.path(), MIB, 100_000).unwrap()));
    assert_eq!(store.max_object(), 100_000);
    assert!(put(&store, "/big", 50_000, &[]));
    assert!(store.get_memory("/big").is_none());
    assert_eq!(store.get("/big").unwrap().map(|e| e.body.len()), Some(50_000));
    assert!(!put(&store, "/huge", 200_000, &[]), "bypasses the cache");
    assert_eq!(store.memory().stats().rejected, 3, "/big when inserted and when promoted, /huge");
}
