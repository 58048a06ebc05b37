use super::*;

fn k(i: u64) -> CacheKey {
    CacheKey::of(&format!("/k/{i}"))
}

/// Inserts `i` with weight 1; returns the keys evicted.
fn put(cache: &mut S3Fifo<u64>, i: u64) -> Vec<u64> {
    let mut evicted = Vec::new();
    assert!(cache.insert(k(i), i, 1, &mut evicted).is_ok());
    cache.check();
    evicted.into_iter().map(|(_, v)| v).collect()
}

#[test]
fn one_hit_wonders_leave_before_keys_that_were_read() {
    let mut cache = S3Fifo::new(10);
    for i in 0..10 {
        assert!(put(&mut cache, i).is_empty(), "room for ten");
    }
    for i in 0..5 {
        assert_eq!(cache.get(&k(i)), Some(&i));
    }
    let mut evicted = Vec::new();
    for i in 10..20 {
        evicted.extend(put(&mut cache, i));
    }
    evicted.sort_unstable();
    assert_eq!(evicted, (5..15).collect::<Vec<_>>(), "unread keys go first, in FIFO order");
    for i in 0..5 {
        assert_eq!(cache.queue_of(&k(i)), Some(Queue::Main), "read keys moved to the main queue");
    }
    assert_eq!(cache.len(), 10);
}

#[test]
fn a_scan_does_not_flush_the_hot_set() {
    let mut cache = S3Fifo::new(100);
    for i in 0..50 {
        put(&mut cache, i);
        cache.get(&k(i));
    }
    // A scan twenty times the cache's size, each key asked for once.
    for i in 1_000..3_000 {
        put(&mut cache, i);
    }
    for i in 0..50 {
        assert!(cache.get(&k(i)).is_some(), "hot key {i} survived the scan");
    }

    // LRU would keep only the scan's last 100 keys.
    assert!(cache.get(&k(1_000)).is_none());
}

#[test]
fn a_key_asked_for_again_soon_after_leaving_goes_to_the_main_queue() {
    let mut cache = S3Fifo::new(10);
    for i in 0..10 {
        put(&mut cache, i);
    }
    assert_eq!(put(&mut cache, 10), [0]);
    assert!(cache.is_ghost(&k(0)));
    assert_eq!(cache.queue_of(&k(10)), Some(Queue::Small));

    put(&mut cache, 0);
    assert_eq!(cache.queue_of(&k(0)), Some(Queue::Main), "a ghost comes back into the main queue");
    assert!(!cache.is_ghost(&k(0)));
}

#[test]
fn the_main_queue_gives_read_objects_another_round() {
    let mut cache = S3Fifo::new(10);
    for i in 0..10 {
        put(&mut cache, i);
        cache.get(&k(i));
    }
    // All ten were read: they move to the main queue (counters cleared), then its head leaves.
    assert_eq!(put(&mut cache, 100), [0]);
    assert!((1..10).all(|i| cache.queue_of(&k(i)) == Some(Queue::Main)));

    cache.get(&k(100));
    cache.get(&k(1));
    // 100 moves to the main queue; key 1 was read, so the main queue passes over it once.
    assert_eq!(put(&mut cache, 101), [2]);
    assert_eq!(cache.queue_of(&k(100)), Some(Queue::Main));
    assert!(cache.get(&k(1)).is_some());
}

#[test]
fn the_budget_holds_under_random_weights_and_operations() {
    let mut rng = fastrand::Rng::with_seed(11);
    let mut cache = S3Fifo::new(10_000);
    let mut evicted = Vec::new();
    for _ in 0..20_000 {
        let i = rng.u64(0..500);
        match rng.u8(0..10) {
            0 => {
                cache.remove(&k(i));
            }
            1..=4 => {
                cache.get(&k(i));
            }
            _ => {
                let weight = rng.u64(1..=2_000);
                assert!(cache.insert(k(i), i, weight, &mut evicted).is_ok());
            }
        }
        cache.check();
        assert!(cache.bytes() <= 10_000);
    }
    assert!(!evicted.is_empty());
}

#[test]
fn an_object_over_the_budget_is_refused() {
    let mut cache = S3Fifo::new(100);
    let mut evicted = Vec::new();
    assert_eq!(cache.insert(k(1), 1, 101, &mut evicted), Err(1));
    assert_eq!(cache.insert(k(2), 2, 100, &mut evicted), Ok(None));
    assert_eq!(cache.insert(k(2), 3, 50, &mut evicted), Ok(Some(2)), "a replacement gives the old value back");
    assert_eq!(cache.bytes(), 50);
    assert!(evicted.is_empty());
}

#[test]
fn stale_pairs_do_not_pile_up() {
    let mut cache = S3Fifo::new(1_000_000);
    let mut evicted = Vec::new();
    for round in 0..10_000 {
        assert!(cache.insert(k(round % 10), round, 1, &mut evicted).is_ok());
        if round % 3 == 1 {
            cache.remove(&k(round % 7));
        }
        assert!(cache.pairs() <= 2 * cache.len() + SLACK + 1, "{} pairs for {} objects", cache.pairs(), cache.len());
    }
    cache.check();
}
