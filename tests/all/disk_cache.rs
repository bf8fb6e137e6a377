//! The on-disk compilation cache holds native code the host runs: an entry
//! is used only for the bytes it was compiled from, on this engine, under
//! this user's key; anything else is compiled anew, and nothing about the
//! cache fails a load.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use xcs::{Host, Limits};

use crate::util::load;

/// A private scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("xcs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }

    fn cache(&self) -> PathBuf {
        self.0.join("cache")
    }

    fn key(&self) -> PathBuf {
        self.0.join("keys/cache-key")
    }

    /// A host over this scratch's cache and key, every time a new one (an
    /// empty in-memory cache of loaded operators).
    fn host(&self) -> Host {
        self.host_with_key(&self.key())
    }

    fn host_with_key(&self, key: &Path) -> Host {
        Host::builder()
            .cache_dir(self.cache())
            .cache_key_file(key)
            .max_concurrent_instances(4)
            .build()
            .expect("a host over the scratch cache")
    }

    /// The cache's entries, by file name.
    fn entries(&self) -> Vec<PathBuf> {
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(self.cache()) {
            Ok(listing) => listing
                .map(|item| item.expect("a listing").path())
                .collect(),
            Err(_) => Vec::new(),
        };
        entries.sort();
        entries
    }

    /// The entry of the operator whose digest is `digest` (`sha256:…`).
    fn entry_of(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        let found: Vec<PathBuf> = self
            .entries()
            .into_iter()
            .filter(|path| {
                path.file_name()
                    .expect("a file name")
                    .to_string_lossy()
                    .starts_with(hex)
            })
            .collect();
        assert_eq!(found.len(), 1, "one entry for {digest}: {found:?}");
        found[0].clone()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Loads `upper` in `host` and proves it is `upper` that answers: its name,
/// and a call's result.
async fn assert_upper(host: &Host) {
    let upper = load(host, xcs_tests::UPPER).await;
    assert_eq!(upper.metadata().name, "upper");
    assert_eq!(
        upper
            .call(&json!({ "text": "abc" }), &Limits::default())
            .await
            .expect("upper answers"),
        json!("ABC")
    );
}

#[tokio::test]
async fn a_valid_entry_is_loaded_without_compiling() {
    let scratch = Scratch::new("cache-hit");
    let first = scratch.host();
    assert_upper(&first).await;
    assert_eq!(first.compilations(), 1);
    assert_eq!(scratch.entries().len(), 1);
    let second = scratch.host();
    assert_upper(&second).await;
    assert_eq!(second.compilations(), 0, "answered by the disk cache");

    let key = std::fs::read_to_string(scratch.key()).unwrap();
    assert_eq!(key.trim().len(), 64, "{key:?}");
    assert!(key.trim().bytes().all(|byte| byte.is_ascii_hexdigit()));
    let mode = std::fs::metadata(scratch.key())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the key is its owner's alone");
    let mode = std::fs::metadata(scratch.entries()[0].clone())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "an entry is its owner's alone");
}

/// Another operator's entry, renamed to upper's, is not upper's code: the
/// load compiles upper, replaces the entry, and the next host uses it.
#[tokio::test]
async fn a_swapped_entry_is_not_used() {
    let scratch = Scratch::new("cache-swap");
    let host = scratch.host();
    let upper = load(&host, xcs_tests::UPPER).await;
    let noop = load(&host, xcs_tests::NOOP).await;
    let upper_entry = scratch.entry_of(upper.digest());
    std::fs::copy(scratch.entry_of(noop.digest()), &upper_entry).unwrap();

    let swapped = scratch.host();
    assert_upper(&swapped).await;
    assert_eq!(
        swapped.compilations(),
        1,
        "compiled, not taken from noop's entry"
    );
    let after = scratch.host();
    assert_upper(&after).await;
    assert_eq!(after.compilations(), 0, "the entry was replaced by upper's");
}

/// An entry changed anywhere — its code, its header, cut short, emptied,
/// grown, or replaced by a directory — is compiled anew.
#[tokio::test]
async fn a_modified_entry_is_not_used() {
    let scratch = Scratch::new("cache-patch");
    let host = scratch.host();
    let upper = load(&host, xcs_tests::UPPER).await;
    let entry = scratch.entry_of(upper.digest());
    let original = std::fs::read(&entry).unwrap();
    let flipped = |at: usize| {
        let mut bytes = original.clone();
        bytes[at] ^= 0x01;
        bytes
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a code byte", flipped(original.len() - 100)),
        ("the first code byte", flipped(8 + 32 + 32 + 32)),
        ("the magic", flipped(0)),
        ("the digest", flipped(8)),
        ("the engine", flipped(8 + 32)),
        ("the MAC", flipped(8 + 32 + 32)),
        ("cut short", original[..original.len() / 2].to_vec()),
        ("header only", original[..8 + 32 + 32 + 32].to_vec()),
        ("empty", Vec::new()),
        ("grown", [original.as_slice(), b"more"].concat()),
    ];
    for (case, bytes) in cases {
        std::fs::write(&entry, bytes).unwrap();
        let patched = scratch.host();
        assert_upper(&patched).await;
        assert_eq!(patched.compilations(), 1, "{case}: compiled anew");
        assert_eq!(
            std::fs::read(&entry).unwrap().len(),
            original.len(),
            "{case}: the entry was rewritten"
        );
    }

    std::fs::remove_file(&entry).unwrap();
    std::fs::create_dir(&entry).unwrap();
    let blocked = scratch.host();
    assert_upper(&blocked).await;
    assert_eq!(blocked.compilations(), 1, "a directory is no entry");
    assert!(
        entry.is_dir(),
        "and it cannot be replaced: the load goes on"
    );
}

/// An entry written under another key (another user's, or a forged one)
/// is not used.
#[tokio::test]
async fn an_entry_under_another_key_is_not_used() {
    let scratch = Scratch::new("cache-key");
    assert_upper(&scratch.host()).await;
    let other_key = scratch.0.join("keys/other-key");
    let other = scratch.host_with_key(&other_key);
    assert_upper(&other).await;
    assert_eq!(
        other.compilations(),
        1,
        "the entry's MAC is under another key"
    );
    assert_ne!(
        std::fs::read(&other_key).unwrap(),
        std::fs::read(scratch.key()).unwrap(),
        "a new key is random"
    );
    let again = scratch.host();
    assert_upper(&again).await;
    assert_eq!(
        again.compilations(),
        1,
        "and the other key's entry is not ours"
    );
}

/// A key that others can read (or that is malformed, not a file, inside
/// the cache, or relative) means no cache: nothing is read or written.
#[tokio::test]
async fn a_key_others_can_read_means_no_cache() {
    let scratch = Scratch::new("cache-key-vet");
    std::fs::create_dir_all(scratch.0.join("keys")).unwrap();
    let readable = scratch.0.join("keys/readable");
    std::fs::write(&readable, "ab".repeat(32)).unwrap();
    std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).unwrap();
    let malformed = scratch.0.join("keys/malformed");
    std::fs::write(&malformed, "not a key").unwrap();
    std::fs::set_permissions(&malformed, std::fs::Permissions::from_mode(0o600)).unwrap();
    let directory = scratch.0.join("keys/directory");
    std::fs::create_dir(&directory).unwrap();
    let inside = scratch.cache().join("cache-key");
    for key in [
        readable,
        malformed,
        directory,
        inside.clone(),
        PathBuf::from("relative-key"),
    ] {
        let host = scratch.host_with_key(&key);
        assert_eq!(host.disk_cache_dir(), None, "{}", key.display());
        assert_upper(&host).await;
        assert_upper(&scratch.host_with_key(&key)).await;
        assert!(
            scratch.entries().is_empty(),
            "{}: nothing cached",
            key.display()
        );
    }
    assert!(!inside.exists() && !Path::new("relative-key").exists());
}

/// The directory stays under its byte bound: the least recently used
/// entries go (a hit counts as a use), and code larger than the bound is
/// not stored at all.
#[tokio::test]
async fn the_cache_keeps_under_its_bound() {
    let scratch = Scratch::new("cache-bound");
    let bounded = |bytes: u64| {
        Host::builder()
            .cache_dir(scratch.cache())
            .cache_key_file(scratch.key())
            .disk_cache_bytes(bytes)
            .max_concurrent_instances(4)
            .build()
            .expect("a host over the scratch cache")
    };
    let host = scratch.host();
    let noop = load(&host, xcs_tests::NOOP).await;
    let upper = load(&host, xcs_tests::UPPER).await;
    let sort = load(&host, xcs_tests::SORT).await;
    let size = |digest: &str| std::fs::metadata(scratch.entry_of(digest)).unwrap().len();
    let (noop_bytes, sort_bytes) = (size(noop.digest()), size(sort.digest()));
    std::fs::remove_file(scratch.entry_of(sort.digest())).unwrap();
    // noop is the older entry (whatever the file system's clock
    // resolution), but a hit makes upper the least recently used.
    let age = |digest: &str, seconds: u64| {
        std::fs::File::options()
            .write(true)
            .open(scratch.entry_of(digest))
            .unwrap()
            .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(seconds))
            .unwrap();
    };
    age(noop.digest(), 120);
    age(upper.digest(), 60);
    let hit = scratch.host();
    load(&hit, xcs_tests::NOOP).await;
    assert_eq!(hit.compilations(), 0);
    // Room for two: storing sort evicts upper.
    let storing = bounded(noop_bytes + sort_bytes);
    load(&storing, xcs_tests::SORT).await;
    assert_eq!(storing.compilations(), 1);
    let mut kept = vec![
        scratch.entry_of(noop.digest()),
        scratch.entry_of(sort.digest()),
    ];
    kept.sort();
    assert_eq!(scratch.entries(), kept, "upper's entry went");

    std::fs::remove_dir_all(scratch.cache()).unwrap();
    assert_upper(&bounded(1000)).await;
    assert!(scratch.entries().is_empty(), "too large to store");
    let again = bounded(1000);
    assert_upper(&again).await;
    assert_eq!(again.compilations(), 1);
}

/// Hosts that share a cache and load the same bytes at once all get a
/// working operator, and leave one valid entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_sharing_a_cache_load_at_once() {
    let scratch = Scratch::new("cache-race");
    // Built on threads at once: they also race to create the key.
    let hosts: Vec<Host> = std::thread::scope(|scope| {
        let building: Vec<_> = (0..8).map(|_| scope.spawn(|| scratch.host())).collect();
        building
            .into_iter()
            .map(|thread| thread.join().expect("a host builds"))
            .collect()
    });
    for host in &hosts {
        assert_eq!(host.disk_cache_dir(), Some(scratch.cache().as_path()));
    }
    futures::future::join_all(hosts.iter().map(assert_upper)).await;
    assert_eq!(scratch.entries().len(), 1, "{:?}", scratch.entries());
    let after = scratch.host();
    assert_upper(&after).await;
    assert_eq!(after.compilations(), 0);
}

/// A cache directory that others can write, that is a file or that is
/// relative is not used (compiled code from it would run in the host), and
/// the host still builds and loads.
#[tokio::test]
async fn an_unsafe_cache_directory_is_not_used() {
    let scratch = Scratch::new("cache-vet");
    let key = scratch.key();
    let open = scratch.0.join("open");
    std::fs::create_dir_all(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let file = scratch.0.join("file");
    std::fs::write(&file, b"not a directory").unwrap();
    let private = scratch.0.join("private");
    // Another user's directory: only root can make one here.
    let theirs = scratch.0.join("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    let mut cases = Vec::new();
    if std::os::unix::fs::chown(&theirs, Some(65534), None).is_ok() {
        cases.push((theirs.clone(), false));
    }
    for (dir, used) in cases.into_iter().chain([
        (open.clone(), false),
        (file.clone(), false),
        (PathBuf::from("relative/cache"), false),
        (private.clone(), true),
    ]) {
        let host = Host::builder()
            .cache_dir(&dir)
            .cache_key_file(&key)
            .build()
            .unwrap();
        assert_eq!(host.disk_cache_dir().is_some(), used, "{}", dir.display());
        let noop = load(&host, xcs_tests::NOOP).await;
        noop.call(&Value::Null, &Limits::default()).await.unwrap();
        let written = dir.is_dir() && std::fs::read_dir(&dir).unwrap().next().is_some();
        assert_eq!(written, used, "{}", dir.display());
    }
    assert!(
        !Path::new("relative").exists(),
        "nothing made in the working directory"
    );
    let mode = std::fs::metadata(&private).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "a cache directory is made private");
}
