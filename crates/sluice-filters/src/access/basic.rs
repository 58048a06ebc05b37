//! HTTP Basic authentication (RFC 7617) against a password file of `user:hash` lines,
//! with bcrypt (`$2y$`, `$2b$`, `$2a$`: `htpasswd -B`) or argon2 (`$argon2id$` and its
//! siblings) hashes. Weak formats (`$apr1$` MD5, `{SHA}`, DES crypt) are refused when the
//! file is loaded.
//!
//! Password hashes are slow on purpose (a bcrypt check at cost 10 takes ~50 ms of CPU), so
//! three things keep them from becoming a denial of service or a timing oracle:
//! - checks run on the blocking pool, never on a worker thread, and at most
//!   `2 × cores` at once (more wait their turn);
//! - a successful check is remembered for five minutes (a keyed hash of the exact
//!   credentials, bounded to 4,096 entries), so a logged-in browser's every request does
//!   not pay for bcrypt again; a remembered success holds only for the version of the
//!   file it was checked against, so a removed user or a changed password fails as soon
//!   as the file is re-read;
//! - an unknown user is checked against a dummy hash, so timing does not reveal which
//!   user names exist.
//!
//! The file is re-read when its modification time or size changes (looked at once a
//! second at most, remembered credentials or not): adding a user needs no reload, as with
//! nginx's `auth_basic_user_file`. A request with two Authorization fields is refused.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use sluice_core::Body;
use sluice_proxy::Session;
use tokio::sync::Semaphore;

const REMEMBER: Duration = Duration::from_secs(300);
/// How often the file's modification time and size are looked at.
const RECHECK: Duration = Duration::from_secs(1);
const REMEMBERED_MAX: usize = 4096;

/// A bcrypt hash of a random password, checked for unknown users (the cost of
/// `htpasswd -B`), made once.
fn dummy() -> String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| bcrypt::hash(format!("{:x}", fastrand::u128(..)), 10).unwrap_or_default()).clone()
}

/// A password hash from the file.
#[derive(Debug, Clone)]
enum Hash {
    Bcrypt(String),
    Argon2(String),
}

/// Why a password file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `user:hash` with a supported hash.
    #[error("{path}:{line}: {why}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
}

/// Parses a password file's text.
fn parse(path: &Path, text: &str) -> Result<HashMap<String, Hash>, FileError> {
    let mut users = HashMap::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: String| FileError::Line { path: path.to_owned(), line: n + 1, why };
        let Some((user, hash)) = line.split_once(':') else {
            return Err(bad("expected `user:hash`".to_owned()));
        };
        // htpasswd files may carry extra `:`-separated fields after the hash.
        let hash = hash.split(':').next().unwrap_or("");
        if user.is_empty() {
            return Err(bad("the user name is empty".to_owned()));
        }
        let hash = if hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$") {
            Hash::Bcrypt(hash.to_owned())
        } else if hash.starts_with("$argon2") {
            Hash::Argon2(hash.to_owned())
        } else {
            let kind = if hash.starts_with("$apr1$") {
                "an Apache MD5 ($apr1$) hash"
            } else if hash.starts_with("{SHA}") {
                "an unsalted SHA-1 ({SHA}) hash"
            } else if hash.starts_with("$1$") || hash.starts_with("$5$") || hash.starts_with("$6$") {
                "a crypt(3) MD5/SHA hash"
            } else {
                "not a bcrypt or argon2 hash (a plain or DES crypt password?)"
            };
            return Err(bad(format!(
                "user `{user}` has {kind}; only bcrypt and argon2 hashes are accepted: recreate it with `htpasswd -B`"
            )));
        };
        users.insert(user.to_owned(), hash);
    }
    Ok(users)
}

/// Checks that a password file loads (for `sluice check` and reloads).
pub fn check_file(path: &Path) -> Result<usize, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read { path: path.to_owned(), source })?;
    parse(path, &text).map(|users| users.len())
}

/// What tells a changed file from an unchanged one: its modification time and size (a
/// removed line changes the size even within one tick of a coarse file-system clock).
type Stamp = (Option<SystemTime>, Option<u64>);

#[derive(Debug)]
struct Users {
    /// Shared between checks of an unchanged file (a re-check copies no entries).
    users: Arc<HashMap<String, Hash>>,
    /// Counts the loads of the file; remembered successes hold for one generation only.
    generation: u64,
    stamp: Stamp,
    checked: Instant,
}

/// One `basic-auth` rule.
#[derive(Debug)]
pub struct BasicAuth {
    path: PathBuf,
    challenge: HeaderValue,
    users: RwLock<Arc<Users>>,
    /// Keyed hash of the credentials -> the generation of the users they were checked
    /// against, and when.
    remembered: Mutex<HashMap<u64, (u64, Instant)>>,
    /// How often the file is looked at (`RECHECK`; tests look every time).
    recheck: Duration,
    hasher: std::collections::hash_map::RandomState,
    checks: Arc<Semaphore>,
}

impl BasicAuth {
    /// Loads `path`; `realm` is shown by browsers.
    pub fn new(path: &Path, realm: &str) -> Result<Self, FileError> {
        let (users, stamp) = load(path)?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            path: path.to_owned(),
            challenge: HeaderValue::try_from(format!("Basic realm=\"{realm}\", charset=\"UTF-8\""))
                .unwrap_or(HeaderValue::from_static("Basic realm=\"restricted\"")),
            users: RwLock::new(Arc::new(Users {
                users: Arc::new(users),
                generation: 0,
                stamp,
                checked: Instant::now(),
            })),
            remembered: Mutex::new(HashMap::new()),
            recheck: RECHECK,
            hasher: Default::default(),
            checks: Arc::new(Semaphore::new(cores * 2)),
        })
    }

    /// The users now (re-reading the file when it changed).
    fn users(&self) -> Arc<Users> {
        let current = self.users.read().map(|u| u.clone()).unwrap_or_else(|e| e.into_inner().clone());
        if current.checked.elapsed() < self.recheck {
            return current;
        }
        let stamp = stamp_of(&self.path);
        let unchanged = |stamp| Users {
            users: current.users.clone(),
            generation: current.generation,
            stamp,
            checked: Instant::now(),
        };
        let next = if stamp != current.stamp {
            match load(&self.path) {
                Ok((users, stamp)) => {
                    tracing::info!(file = %self.path.display(), users = users.len(), "password file re-read");
                    // The generation alone already retires the old successes; clearing
                    // frees their memory.
                    if let Ok(mut r) = self.remembered.lock() {
                        r.clear();
                    }
                    Users { users: Arc::new(users), generation: current.generation + 1, stamp, checked: Instant::now() }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "password file changed but cannot be used; keeping the previous users");
                    unchanged(stamp)
                }
            }
        } else {
            unchanged(stamp)
        };
        let next = Arc::new(next);
        if let Ok(mut slot) = self.users.write() {
            *slot = next.clone();
        }
        next
    }

    /// `None` when the request carries valid credentials; otherwise the 401 answer.
    pub async fn check(&self, session: &Session) -> Option<Response<Body>> {
        match self.authenticate(&session.req.headers).await {
            Ok(()) => None,
            Err(user) => {
                if let Some(user) = user {
                    tracing::info!(
                        client = %session.client_addr(),
                        user = %user.escape_debug(),
                        "basic authentication failed"
                    );
                }
                Some(self.challenge())
            }
        }
    }

    /// Checks the credentials in `headers`: `Err(None)` when there are none (or two
    /// Authorization fields), `Err(Some(user))` when they are wrong.
    async fn authenticate(&self, headers: &HeaderMap) -> Result<(), Option<String>> {
        let mut fields = headers.get_all(AUTHORIZATION).iter();
        let first = fields.next();
        // Two sets of credentials are refused, not one picked: a proxy in front may have
        // looked at the other one.
        if fields.next().is_some() {
            return Err(None);
        }
        let (user, password) = credentials(first).ok_or(None)?;
        let key = {
            let mut h = self.hasher.build_hasher();
            h.write(user.as_bytes());
            h.write_u8(0);
            h.write(password.as_bytes());
            h.finish()
        };
        // The file is looked at before the remembered successes, so that a change to it
        // (a removed user, a new password) counts for remembered credentials too.
        let users = self.users();
        let fresh = self
            .remembered
            .lock()
            .ok()
            .and_then(|r| r.get(&key).copied())
            .is_some_and(|(generation, at)| generation == users.generation && at.elapsed() < REMEMBER);
        if fresh {
            return Ok(());
        }
        let hash = users.users.get(&user).cloned();
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| Hash::Bcrypt(dummy()));
        let Ok(permit) = self.checks.clone().acquire_owned().await else { return Err(Some(user)) };
        let verified = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            match hash {
                Hash::Bcrypt(h) => bcrypt::verify(password.as_bytes(), &h).unwrap_or(false),
                Hash::Argon2(h) => {
                    use argon2::PasswordVerifier as _;
                    argon2::Argon2::default().verify_password(password.as_bytes(), h.as_str()).is_ok()
                }
            }
        })
        .await
        .unwrap_or(false);
        if verified && known {
            if let Ok(mut r) = self.remembered.lock() {
                if r.len() >= REMEMBERED_MAX {
                    r.retain(|_, (_, at)| at.elapsed() < REMEMBER);
                    if r.len() >= REMEMBERED_MAX {
                        r.clear();
                    }
                }
                // Checked against `users.generation`: if the file was re-read meanwhile,
                // this success is already stale and is not believed.
                r.insert(key, (users.generation, Instant::now()));
            }
            return Ok(());
        }
        Err(Some(user))
    }

    fn challenge(&self) -> Response<Body> {
        let mut r = super::plain(StatusCode::UNAUTHORIZED, "401 Unauthorized\n");
        r.headers_mut().insert(WWW_AUTHENTICATE, self.challenge.clone());
        r
    }
}

fn load(path: &Path) -> Result<(HashMap<String, Hash>, Stamp), FileError> {
    // The stamp is taken first: a write racing the read then shows as a change next time.
    let stamp = stamp_of(path);
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read { path: path.to_owned(), source })?;
    Ok((parse(path, &text)?, stamp))
}

fn stamp_of(path: &Path) -> Stamp {
    match std::fs::metadata(path) {
        Ok(m) => (m.modified().ok(), Some(m.len())),
        Err(_) => (None, None),
    }
}

/// `Authorization: Basic base64(user:password)`.
fn credentials(value: Option<&HeaderValue>) -> Option<(String, String)> {
    let text = value?.to_str().ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn files_with_weak_hashes_are_refused_with_their_line() {
        let p = Path::new("users");
        assert_eq!(
            parse(p, "# staff\nalice:$2y$05$abcdefghijklmnopqrstuu5Q3u4bJ2hC8O1cWQFv8s7l3n5m3nC6W\n").unwrap().len(),
            1
        );
        let e = parse(p, "alice:$2y$05$x\nbob:$apr1$abc$def\n").unwrap_err().to_string();
        assert!(e.contains("users:2") && e.contains("$apr1$"), "{e}");
        let e = parse(p, "carol:{SHA}abc=\n").unwrap_err().to_string();
        assert!(e.contains("{SHA}"), "{e}");
        assert!(parse(p, "nocolon\n").is_err());
        assert!(parse(p, ":$2y$05$x\n").is_err());
    }

    #[test]
    fn credentials_are_decoded() {
        let v = HeaderValue::from_static("Basic YWxpY2U6c2VjcmV0OndpdGg6Y29sb25z");
        assert_eq!(credentials(Some(&v)), Some(("alice".into(), "secret:with:colons".into())));
        assert_eq!(credentials(Some(&HeaderValue::from_static("Bearer abc"))), None);
        assert_eq!(credentials(Some(&HeaderValue::from_static("Basic !!!"))), None);
        assert_eq!(credentials(None), None);
    }

    #[test]
    fn the_dummy_hash_is_a_valid_bcrypt_hash() {
        assert_eq!(bcrypt::verify("anything", &dummy()).ok(), Some(false));
    }

    /// A password file in a fresh temporary directory, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(text: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("sluice-basic-{}-{:x}", std::process::id(), fastrand::u64(..)));
            std::fs::create_dir(&dir).unwrap();
            let file = Self(dir.join("users"));
            file.write(text, SystemTime::now());
            file
        }

        /// Writes `text` with modification time `at`, so that a change never hides within
        /// one tick of the file system's clock.
        fn write(&self, text: &str, at: SystemTime) {
            std::fs::write(&self.0, text).unwrap();
            std::fs::File::options().write(true).open(&self.0).unwrap().set_modified(at).unwrap();
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn line(user: &str, password: &str) -> String {
        format!("{user}:{}\n", bcrypt::hash(password, 4).unwrap())
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::try_from(format!("Basic {encoded}")).unwrap());
        headers
    }

    /// A rule over `file` that looks at the file on every check.
    fn rule(file: &TempFile) -> BasicAuth {
        BasicAuth { recheck: Duration::ZERO, ..BasicAuth::new(&file.0, "test").unwrap() }
    }

    #[tokio::test]
    async fn a_removed_user_fails_at_once_even_when_remembered() {
        let file = TempFile::new(&(line("alice", "secret") + &line("bob", "hunter2")));
        let auth = rule(&file);
        assert_eq!(auth.authenticate(&basic("alice", "secret")).await, Ok(()));
        assert_eq!(auth.authenticate(&basic("alice", "secret")).await, Ok(()), "remembered");
        file.write(&line("bob", "hunter2"), SystemTime::now() + Duration::from_secs(10));
        assert_eq!(auth.authenticate(&basic("alice", "secret")).await, Err(Some("alice".to_owned())));
        assert_eq!(auth.authenticate(&basic("bob", "hunter2")).await, Ok(()));
    }

    #[tokio::test]
    async fn a_changed_password_fails_at_once_even_when_remembered() {
        let file = TempFile::new(&line("alice", "old"));
        let auth = rule(&file);
        assert_eq!(auth.authenticate(&basic("alice", "old")).await, Ok(()));
        file.write(&line("alice", "new"), SystemTime::now() + Duration::from_secs(10));
        assert_eq!(auth.authenticate(&basic("alice", "old")).await, Err(Some("alice".to_owned())));
        assert_eq!(auth.authenticate(&basic("alice", "new")).await, Ok(()));
    }

    #[tokio::test]
    async fn a_success_checked_against_an_older_file_is_not_believed() {
        let file = TempFile::new(&line("alice", "secret"));
        let auth = rule(&file);
        let key = {
            let mut h = auth.hasher.build_hasher();
            h.write(b"alice");
            h.write_u8(0);
            h.write(b"secret");
            h.finish()
        };
        file.write("", SystemTime::now() + Duration::from_secs(10));
        assert_eq!(auth.users().generation, 1);
        // A check that began before the re-read and finished after it.
        auth.remembered.lock().unwrap().insert(key, (0, Instant::now()));
        assert_eq!(auth.authenticate(&basic("alice", "secret")).await, Err(Some("alice".to_owned())));
    }

    #[tokio::test]
    async fn two_authorization_fields_are_refused() {
        let file = TempFile::new(&line("alice", "secret"));
        let auth = rule(&file);
        let mut headers = basic("alice", "secret");
        assert_eq!(auth.authenticate(&headers).await, Ok(()));
        headers.append(AUTHORIZATION, headers.get(AUTHORIZATION).unwrap().clone());
        assert_eq!(auth.authenticate(&headers).await, Err(None), "even when both are valid and remembered");
        let mut headers = basic("alice", "secret");
        headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(auth.authenticate(&headers).await, Err(None));
    }
}
