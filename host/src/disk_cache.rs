//! The on-disk compilation cache: compiled components, each entry bound to
//! the bytes it was compiled from and authenticated with a per-user key.
//!
//! Compiled code is native code that the host maps executable and runs
//! without further checks, so an entry is used only when
//!
//! - the directory is private: absolute, owned by this process's user and
//!   not writable by group or others (checked when the cache is opened);
//! - its header names the digest of the bytes being loaded and this
//!   engine's configuration (another operator's entry, renamed, is not);
//! - its HMAC-SHA256, under a 256-bit key kept *outside* the cache
//!   directory in a file only its owner can read, matches magic, digest,
//!   engine and artifact (a patched or truncated entry, or one written
//!   under another key, is not).
//!
//! A bad entry is reported (`tracing` target `xcs::cache`) and replaced by
//! a fresh compilation; nothing about the cache ever fails a load. Entries
//! are written to a private temporary file and renamed into place, so
//! readers never see half an entry; the directory is kept under its byte
//! bound by evicting the least recently used entries (a hit touches its
//! entry).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The first bytes of every entry: format and version.
const MAGIC: &[u8; 8] = b"xcs-cc\0\x01";
const DIGEST_LEN: usize = 32;
const ENGINE_LEN: usize = 32;
const MAC_LEN: usize = 32;
const HEADER_LEN: usize = MAGIC.len() + DIGEST_LEN + ENGINE_LEN + MAC_LEN;
/// Entries end in this; nothing else in the directory is touched, except
/// stale temporary files of ours.
const ENTRY_SUFFIX: &str = ".xcs";
const TEMP_SUFFIX: &str = ".xcs-tmp";
/// A temporary file this old belongs to a writer that died.
const STALE_TEMP: Duration = Duration::from_secs(600);

type HmacSha256 = Hmac<Sha256>;

/// Environment variable naming the file of the key that authenticates the
/// entries of the on-disk compilation cache (default
/// `$XDG_CONFIG_HOME/xcs/cache-key`, else `~/.config/xcs/cache-key`).
pub const CACHE_KEY_FILE_ENV: &str = "XCS_CACHE_KEY_FILE";

/// An open, vetted cache directory with its key.
pub(crate) struct DiskCache {
    dir: PathBuf,
    key: [u8; 32],
    /// A digest of the engine's compatibility hash: compiled code is only
    /// valid for the engine configuration and wasmtime version that made it.
    engine_id: [u8; ENGINE_LEN],
    max_bytes: u64,
}

impl std::fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("DiskCache")
            .field("dir", &self.dir)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

/// What a lookup found.
pub(crate) enum Lookup {
    Hit(Component),
    Miss,
    /// An entry was there and was not used: why.
    Rejected(String),
}

impl DiskCache {
    /// Opens the cache in `dir` (created private if missing) with the key
    /// in `key_file` (created, 0600, if missing). `Err` says why the cache
    /// cannot be used; the caller goes on without one.
    pub(crate) fn open(
        dir: &Path,
        key_file: &Path,
        engine: &Engine,
        max_bytes: u64,
    ) -> Result<DiskCache, String> {
        vet_dir(dir)?;
        if let Some(key_dir) = key_file
            .parent()
            .and_then(|parent| parent.canonicalize().ok())
            && let Ok(cache_dir) = dir.canonicalize()
            && key_dir.starts_with(&cache_dir)
        {
            return Err(format!(
                "its key file {} is inside it: keep the key elsewhere",
                key_file.display(),
            ));
        }
        let key = load_or_create_key(key_file)
            .map_err(|problem| format!("its key file {}: {problem}", key_file.display()))?;
        Ok(DiskCache {
            dir: dir.to_path_buf(),
            key,
            engine_id: engine_id(engine),
            max_bytes,
        })
    }

    /// The directory of the entries.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry_path(&self, digest: &[u8; DIGEST_LEN]) -> PathBuf {
        self.dir.join(format!(
            "{}-{}{ENTRY_SUFFIX}",
            hex(digest),
            &hex(&self.engine_id)[..16]
        ))
    }

    fn mac(&self, digest: &[u8; DIGEST_LEN], artifact: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(MAGIC);
        mac.update(digest);
        mac.update(&self.engine_id);
        mac.update(artifact);
        mac
    }

    /// The compiled component for the bytes whose SHA-256 is `digest`, if a
    /// valid entry holds it.
    pub(crate) fn lookup(&self, engine: &Engine, digest: &[u8; DIGEST_LEN]) -> Lookup {
        let path = self.entry_path(digest);
        let entry = match read_bounded(&path, self.max_bytes) {
            Ok(entry) => entry,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Lookup::Miss,
            Err(error) => return Lookup::Rejected(format!("{}: {error}", path.display())),
        };
        let artifact = match self.verify(&entry, digest) {
            Ok(artifact) => artifact,
            Err(problem) => return Lookup::Rejected(format!("{}: {problem}", path.display())),
        };
        match deserialize(engine, artifact) {
            Ok(component) => {
                // Least recently used goes first; a failed touch only makes
                // this entry an earlier candidate.
                if let Ok(file) = File::options().write(true).open(&path) {
                    let _ = file.set_modified(SystemTime::now());
                }
                Lookup::Hit(component)
            }
            Err(error) => Lookup::Rejected(format!(
                "{}: authentic but not loadable by this engine: {error:#}",
                path.display()
            )),
        }
    }

    /// The artifact inside `entry`, if the entry is for `digest` on this
    /// engine and its MAC is right.
    fn verify<'a>(&self, entry: &'a [u8], digest: &[u8; DIGEST_LEN]) -> Result<&'a [u8], String> {
        if entry.len() < HEADER_LEN {
            return Err(format!("truncated ({} bytes)", entry.len()));
        }
        let (magic, rest) = entry.split_at(MAGIC.len());
        let (entry_digest, rest) = rest.split_at(DIGEST_LEN);
        let (entry_engine, rest) = rest.split_at(ENGINE_LEN);
        let (tag, artifact) = rest.split_at(MAC_LEN);
        if magic != MAGIC {
            return Err("not an xcs cache entry (or another version of the format)".into());
        }
        if entry_digest != digest {
            return Err(format!(
                "holds the code of other bytes (sha256:{})",
                hex(entry_digest)
            ));
        }
        if entry_engine != self.engine_id {
            return Err("compiled by another engine configuration".into());
        }
        // `verify_slice` compares in constant time.
        self.mac(digest, artifact)
            .verify_slice(tag)
            .map_err(|_| "its MAC does not match: modified, or written under another key".into())
            .map(|()| artifact)
    }

    /// Stores `artifact` (what `Component::serialize` made of the bytes
    /// whose digest is `digest`), then evicts down to the byte bound.
    pub(crate) fn store(&self, digest: &[u8; DIGEST_LEN], artifact: &[u8]) -> io::Result<()> {
        let entry_len = (HEADER_LEN + artifact.len()) as u64;
        if entry_len > self.max_bytes {
            return Err(io::Error::other(format!(
                "the compiled code ({entry_len} bytes) is larger than the cache bound ({} bytes)",
                self.max_bytes
            )));
        }
        let path = self.entry_path(digest);
        // Unique among this process's writers (hosts of one process may
        // store the same bytes at once) and other processes'.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let temp = self.dir.join(format!(
            ".{}-{}-{}{TEMP_SUFFIX}",
            hex(digest),
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut file = private_new_file(&temp)?;
            let tag = self.mac(digest, artifact).finalize().into_bytes();
            file.write_all(MAGIC)?;
            file.write_all(digest)?;
            file.write_all(&self.engine_id)?;
            file.write_all(&tag)?;
            file.write_all(artifact)?;
            file.flush()?;
            fs::rename(&temp, &path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written?;
        self.evict();
        Ok(())
    }

    /// Deletes the least recently used entries until the directory's
    /// entries fit the byte bound, and temporary files of dead writers.
    fn evict(&self) {
        let Ok(listing) = fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        let mut entries = Vec::new();
        let mut total: u64 = 0;
        for item in listing.flatten() {
            let name = item.file_name();
            let name = name.to_string_lossy();
            let Ok(metadata) = item.metadata() else {
                continue;
            };
            if !metadata.is_file() {
                continue;
            }
            let modified = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if name.ends_with(TEMP_SUFFIX) {
                if now.duration_since(modified).unwrap_or_default() > STALE_TEMP {
                    let _ = fs::remove_file(item.path());
                }
            } else if name.ends_with(ENTRY_SUFFIX) {
                total = total.saturating_add(metadata.len());
                entries.push((modified, metadata.len(), item.path()));
            }
        }
        if total <= self.max_bytes {
            return;
        }
        entries.sort_by_key(|(modified, _, _)| *modified);
        for (_, len, path) in entries {
            if total <= self.max_bytes {
                break;
            }
            match fs::remove_file(&path) {
                Ok(()) => total = total.saturating_sub(len),
                // Another process evicted it first.
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    total = total.saturating_sub(len);
                }
                Err(error) => tracing::warn!(
                    target: "xcs::cache",
                    "cannot evict {}: {error}",
                    path.display()
                ),
            }
        }
    }
}

/// Loads compiled code.
///
/// The artifact was authenticated by [`DiskCache::verify`]: it was written
/// by a holder of this user's key, for these bytes, on this engine
/// configuration.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` requires bytes that
    // `Component::serialize` (or `Engine::precompile_component`) produced
    // and nobody altered since. Entries are written only by `store`, with
    // what `Component::serialize` returned, under a MAC whose key only this
    // user can read; `verify` checked that MAC (and that the entry is for
    // these bytes and this engine) before this is called. wasmtime further
    // checks its version and the engine's settings in the artifact's header.
    unsafe { Component::deserialize(engine, artifact) }
}

/// Reads `path` whole, refusing files over `max` bytes.
fn read_bounded(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len > max {
        return Err(io::Error::other(format!(
            "{len} bytes, over the cache bound of {max}"
        )));
    }
    let mut entry = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(max.saturating_add(1)).read_to_end(&mut entry)?;
    if entry.len() as u64 > max {
        return Err(io::Error::other(format!(
            "grew over the cache bound of {max}"
        )));
    }
    Ok(entry)
}

/// A new file, readable and writable by its owner only.
fn private_new_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// A digest of `engine`'s compatibility hash, which covers wasmtime's
/// version and every setting that changes compiled code.
fn engine_id(engine: &Engine) -> [u8; ENGINE_LEN] {
    use std::hash::Hash;
    struct Sha256Hasher(Sha256);
    impl std::hash::Hasher for Sha256Hasher {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.update(env!("CARGO_PKG_VERSION"));
    hasher.0.finalize().into()
}

/// `Ok` if `dir` can hold compiled code this process will run: an absolute
/// path to a directory (created, private, if missing) that is owned by
/// this process's user and not writable by group or others, as ssh
/// requires of its keys.
fn vet_dir(dir: &Path) -> Result<(), String> {
    if !dir.is_absolute() {
        return Err("the cache directory must be an absolute path".into());
    }
    private_dir(dir).map_err(|error| format!("cannot create it: {error}"))?;
    let metadata = fs::metadata(dir).map_err(|error| error.to_string())?;
    if !metadata.is_dir() {
        return Err("it is not a directory".into());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if metadata.mode() & 0o022 != 0 {
            return Err(format!(
                "it is writable by group or others (mode {:o}): `chmod go-w` it",
                metadata.mode() & 0o777
            ));
        }
        owned_by_me(&metadata)?;
    }
    Ok(())
}

/// Creates `dir` and its missing parents, private (0700) where created.
fn private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// `Err` unless `metadata` is of a file owned by this process's
/// (effective) user. `/proc/self` belongs to that user on Linux;
/// elsewhere the owner is not checked.
#[cfg(unix)]
fn owned_by_me(metadata: &fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    match fs::metadata("/proc/self") {
        Ok(me) if me.uid() != metadata.uid() => Err(format!(
            "it belongs to user {}, not to this process's user {}",
            metadata.uid(),
            me.uid()
        )),
        _ => Ok(()),
    }
}

/// The key in `path`: 64 hex digits. A missing file is created with a new
/// random key, readable by its owner only; an existing one must be a
/// regular file of this user's that nobody else can read or write.
fn load_or_create_key(path: &Path) -> Result<[u8; 32], String> {
    if !path.is_absolute() {
        return Err("the key file must be an absolute path".into());
    }
    match fs::symlink_metadata(path) {
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            create_key(path).map_err(|error| format!("cannot create it: {error}"))?;
        }
        Err(error) => return Err(error.to_string()),
    }
    let mut file = File::open(path).map_err(|error| error.to_string())?;
    let metadata = file.metadata().map_err(|error| error.to_string())?;
    if !metadata.is_file() {
        return Err("it is not a regular file".into());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if metadata.mode() & 0o077 != 0 {
            return Err(format!(
                "it is readable or writable by group or others (mode {:o}): `chmod 600` it",
                metadata.mode() & 0o777
            ));
        }
        owned_by_me(&metadata)?;
    }
    let mut text = String::new();
    (&mut file)
        .take(256)
        .read_to_string(&mut text)
        .map_err(|error| format!("cannot read it: {error}"))?;
    parse_key(text.trim()).ok_or_else(|| "it does not hold a key (64 hex digits)".to_owned())
}

/// Writes a new random key to `path` unless another process got there
/// first: the key goes to a private temporary file that is then linked
/// into place, so no reader ever sees half a key.
fn create_key(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        private_dir(parent)?;
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|error| io::Error::other(error.to_string()))?;
    static CREATES: AtomicU64 = AtomicU64::new(0);
    let temp = path.with_extension(format!(
        "tmp-{}-{}",
        std::process::id(),
        CREATES.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_file(&temp);
    let written = (|| {
        let mut file = private_new_file(&temp)?;
        file.write_all(format!("{}\n", hex(&key)).as_bytes())?;
        file.sync_all()?;
        match fs::hard_link(&temp, path) {
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    })();
    let _ = fs::remove_file(&temp);
    written
}

fn parse_key(text: &str) -> Option<[u8; 32]> {
    let digits = text.as_bytes();
    if digits.len() != 64 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut key = [0u8; 32];
    for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(key)
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::parse_key;

    #[test]
    fn keys_are_64_hex_digits() {
        let key = parse_key(&"0f".repeat(32)).expect("a key");
        assert_eq!(key, [0x0f; 32]);
        assert!(parse_key(&"0f".repeat(31)).is_none());
        assert!(parse_key(&"0g".repeat(32)).is_none());
        assert!(parse_key(&"+f".repeat(32)).is_none(), "no signs");
        assert!(parse_key(&"é".repeat(32)).is_none());
    }
}
