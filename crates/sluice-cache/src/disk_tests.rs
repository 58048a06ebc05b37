use super::*;
use crate::test_support::{entry, TempDir};

const MIB: u64 = 1 << 20;

/// Number of cache files (in fan-out directories) under `dir`.
fn files(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|d| d.file_name().to_str().is_some_and(is_fan_out))
        .map(|d| fs::read_dir(d.path()).unwrap().count())
        .sum()
}

fn file_len(e: &Entry) -> u64 {
    format::encode(e).unwrap().file_len(e.body.len())
}

#[test]
fn an_entry_round_trips() {
    let dir = TempDir::new("round-trip");
    let tier = DiskTier::open(dir.path(), MIB, MIB).unwrap();
    let e = entry("GET https://example.com/a", 5_000, &["site", "page-a"]);
    assert!(tier.insert(&e).unwrap());
    let key = CacheKey::of(&e.key);
    assert_eq!(tier.get(&key).unwrap(), Some(e.clone()), "every field, the time to the nanosecond");
    assert!(tier.get(&CacheKey::of("GET https://example.com/b")).unwrap().is_none());
    assert_eq!((tier.len(), tier.bytes(), files(dir.path())), (1, file_len(&e), 1));
    let stats = tier.stats();
    assert_eq!((stats.hits, stats.misses, stats.inserts), (1, 1, 1));
    assert!(tier.path_of(&key).starts_with(dir.path().join(&key.to_hex()[..2])));
}

#[test]
fn entries_survive_a_restart() {
    let dir = TempDir::new("restart");
    let entries: Vec<Entry> = (0..5)
        .map(|i| {
            let tags: &[&str] = if i % 2 == 1 { &["odd"] } else { &[] };
            entry(&format!("/r/{i}"), 100 * i, tags)
        })
        .collect();
    let bytes = {
        let tier = DiskTier::open(dir.path(), MIB, MIB).unwrap();
        for e in &entries {
            assert!(tier.insert(e).unwrap());
        }
        tier.bytes()
    };

    let tier = DiskTier::open(dir.path(), MIB, MIB).unwrap();
    assert_eq!((tier.len(), tier.bytes()), (5, bytes));
    for e in &entries {
        assert_eq!(tier.get(&CacheKey::of(&e.key)).unwrap().as_ref(), Some(e));
    }
    assert_eq!(tier.purge_tag("odd").unwrap(), 2, "tags are rebuilt too");
    assert_eq!(files(dir.path()), 3);
}

#[test]
fn damaged_and_half_written_files_are_deleted_at_open_and_others_left_alone() {
    let dir = TempDir::new("damaged");
    let good = entry("/good", 1_000, &[]);
    let copy = {
        let tier = DiskTier::open(dir.path(), MIB, MIB).unwrap();
        assert!(tier.insert(&good).unwrap());
        fs::read(tier.path_of(&CacheKey::of("/good"))).unwrap()
    };
    let put = |key: &CacheKey, data: &[u8]| {
        let hex = key.to_hex();
        fs::create_dir_all(dir.path().join(&hex[..2])).unwrap();
        let path = dir.path().join(&hex[..2]).join(hex);
        fs::write(&path, data).unwrap();
        path
    };
    let garbage = put(&CacheKey::of("/garbage"), b"not a cache file at all");
    let truncated = put(&CacheKey::of("/truncated"), &copy[..copy.len() - 10]);
    let misnamed = put(&CacheKey::of("/misnamed"), &copy);
    let empty = put(&CacheKey::of("/empty"), b"");
    fs::write(dir.path().join(TMP_DIR).join("0123.1.0.tmp"), b"half").unwrap();
    fs::write(dir.path().join("README"), b"not ours").unwrap();
    fs::create_dir_all(dir.path().join("ab")).unwrap();
    fs::write(dir.path().join("ab").join("notes.txt"), b"not ours either").unwrap();

    let tier = DiskTier::open(dir.path(), MIB, MIB).unwrap();
    assert_eq!(tier.len(), 1);
    assert_eq!(tier.get(&CacheKey::of("/good")).unwrap(), Some(good));
    for path in [garbage, truncated, misnamed, empty] {
        assert!(!path.exists(), "{} was deleted", path.display());
    }
    assert_eq!(fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count(), 0);
    assert!(dir.path().join("README").exists() && dir.path().join("ab").join("notes.txt").exists());
}

#[test]
fn damage_found_on_read_is_a_miss_and_deletes_the_file() {
    let dir = TempDir::new("bit-flip");
    let tier = DiskTier::open(dir.path(), MIB, MIB).unwrap();
    let e = entry("/flip", 4_000, &["t"]);
    assert!(tier.insert(&e).unwrap());
    let key = CacheKey::of("/flip");
    let path = tier.path_of(&key);
    let mut data = fs::read(&path).unwrap();
    let middle = data.len() - 2_000;
    data[middle] ^= 0xff;
    fs::write(&path, data).unwrap();

    assert_eq!(tier.get(&key).unwrap(), None);
    assert!(!path.exists());
    assert!(tier.is_empty());
    assert_eq!(tier.purge_tag("t").unwrap(), 0, "its tags went with it");
}

#[test]
fn the_budget_evicts_files() {
    let dir = TempDir::new("budget");
    let size = file_len(&entry("/b/0", 10_000, &[]));
    let tier = DiskTier::open(dir.path(), size * 7 / 2, size * 2).unwrap();
    for i in 0..10 {
        assert!(tier.insert(&entry(&format!("/b/{i}"), 10_000, &[])).unwrap());
        assert!(tier.bytes() <= tier.budget());
        assert_eq!(files(dir.path()), tier.len());
    }
    assert_eq!(tier.len(), 3);
    assert_eq!(tier.stats().evictions, 7);
    assert!(tier.get(&CacheKey::of("/b/9")).unwrap().is_some(), "the newest stays");

    // Reopened with a smaller budget, the tier sheds files to fit.
    drop(tier);
    let tier = DiskTier::open(dir.path(), size * 2, size * 2).unwrap();
    assert_eq!((tier.len(), files(dir.path())), (2, 2));
}

#[test]
fn objects_over_max_object_are_refused_and_the_older_version_goes() {
    let dir = TempDir::new("max-object");
    let tier = DiskTier::open(dir.path(), MIB, 10_000).unwrap();
    assert!(tier.insert(&entry("/big", 1_000, &[])).unwrap());
    assert!(!tier.insert(&entry("/big", 20_000, &[])).unwrap());
    assert!(tier.get(&CacheKey::of("/big")).unwrap().is_none());
    assert_eq!(files(dir.path()), 0);
    assert_eq!(tier.stats().rejected, 1);
    assert_eq!(DiskTier::open(dir.path(), 1_000, MIB).unwrap().max_object(), 1_000, "capped by the budget");
}

#[test]
fn remove_and_purge_delete_the_files() {
    let dir = TempDir::new("purge");
    let tier = DiskTier::open(dir.path(), MIB, MIB).unwrap();
    for i in 0..6 {
        let tags: &[&str] = if i < 4 { &["group"] } else { &[] };
        assert!(tier.insert(&entry(&format!("/p/{i}"), 10, tags)).unwrap());
    }
    assert!(tier.remove(&CacheKey::of("/p/0")).unwrap());
    assert!(!tier.remove(&CacheKey::of("/p/0")).unwrap());
    assert_eq!(tier.purge_tag("group").unwrap(), 3);
    assert_eq!((tier.len(), files(dir.path())), (2, 2));

    // A new version under a key replaces the file and its tags.
    assert!(tier.insert(&entry("/p/4", 10, &["new"])).unwrap());
    assert_eq!((tier.len(), files(dir.path())), (2, 2));
    assert_eq!(tier.purge_tag("new").unwrap(), 1);
    assert_eq!((tier.len(), files(dir.path())), (1, 1));
}

#[test]
fn a_file_deleted_behind_the_index_is_a_miss() {
    let dir = TempDir::new("deleted");
    let tier = DiskTier::open(dir.path(), MIB, MIB).unwrap();
    assert!(tier.insert(&entry("/gone", 10, &[])).unwrap());
    fs::remove_file(tier.path_of(&CacheKey::of("/gone"))).unwrap();
    assert!(tier.get(&CacheKey::of("/gone")).unwrap().is_none());
    assert!(tier.is_empty());
}

#[test]
fn the_format_refuses_cut_or_foreign_data() {
    let e = entry("/f", 100, &["a", "b"]);
    let encoded = format::encode(&e).unwrap();
    let mut file = encoded.prefix.clone();
    file.extend_from_slice(&e.body);
    file.extend_from_slice(&encoded.trailer);
    assert_eq!(format::decode(Bytes::from(file.clone())).unwrap(), e);
    for cut in [0, 8, 16, file.len() / 2, file.len() - 1] {
        let err = format::decode(Bytes::copy_from_slice(&file[..cut])).unwrap_err();
        assert!(format::is_damage(&err), "cut at {cut}: {err}");
    }
    let mut other_version = file;
    other_version[8] = 2;
    assert!(format::decode(Bytes::from(other_version)).is_err());
}
