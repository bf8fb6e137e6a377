//! What an operator may reach beyond its sandbox: outgoing HTTP to the
//! origins on an allow-list, read-only directories and named environment
//! variables. Nothing is granted unless a grant names it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;

pub(crate) mod http;

pub use http::{DEFAULT_HTTP_TIMEOUT, DEFAULT_MAX_REQUESTS, DEFAULT_MAX_RESPONSE_BYTES, HttpGrant};

/// Grants for an operator's calls: origins it may send HTTP requests to
/// (see [`HttpGrant`]), host directories it may read (each at a guest path,
/// read-only) and environment variables it sees (by name, with their values
/// read once, when the host is built). Without grants an operator reaches
/// no network, sees no file and no environment.
///
/// Give them to every operator with
/// [`HostBuilder::grants`](crate::HostBuilder::grants), to one more by
/// name or digest with
/// [`HostBuilder::grants_for`](crate::HostBuilder::grants_for), or from a
/// grants file with [`GrantsTable`].
/// Calls of an operator granted a directory, or HTTP (unless the HTTP
/// grant is declared [deterministic](HttpGrant::deterministic)), are never
/// answered by the result cache nor merged with identical calls: what a
/// file or a server holds is not part of the input. Variables keep their
/// values for the host's life, so they do not stop caching.
///
/// ```no_run
/// let grants = xcs::Grants::new()
///     .allow_http("https://api.example.com")
///     .read_dir("/srv/prompts", "/prompts")
///     .env("API_KEY");
/// let host = xcs::Host::builder().grants_for("summarize", grants).build()?;
/// # drop(host);
/// # Ok::<(), xcs::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Grants {
    pub(crate) dirs: Vec<DirGrant>,
    pub(crate) env: Vec<(String, String)>,
    /// Variables whose values are read from this process's environment
    /// when the host is built.
    pub(crate) from_host: Vec<String>,
    pub(crate) http: HttpGrant,
}

/// Variables by name only: their values (API keys) stay out of logs and
/// assertion messages.
impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grants")
            .field("dirs", &self.dirs)
            .field("env", &self.env_names().collect::<Vec<_>>())
            .field("http", &self.http.patterns().collect::<Vec<_>>())
            .finish()
    }
}

/// A host directory the guest may read at `guest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DirGrant {
    pub(crate) host: PathBuf,
    pub(crate) guest: String,
}

impl Grants {
    /// No grants: what every operator has by default.
    pub fn new() -> Grants {
        Grants::default()
    }

    /// The host directory `host`, readable by the guest at the absolute
    /// path `guest` (e.g. `/data`): its files and subdirectories, read-only;
    /// nothing outside it (`..` and symbolic links that lead out fail).
    /// Checked when the host is built: `host` must be a directory, `guest`
    /// absolute and granted once.
    pub fn read_dir(mut self, host: impl Into<PathBuf>, guest: impl Into<String>) -> Grants {
        self.dirs.push(DirGrant {
            host: host.into(),
            guest: guest.into(),
        });
        self
    }

    /// The environment variable `name`, with the value it has in this
    /// process when the host is built (a `config` error then if it is not
    /// set, or not UTF-8).
    pub fn env(mut self, name: impl Into<String>) -> Grants {
        let name = name.into();
        self.env.retain(|(existing, _)| *existing != name);
        if !self.from_host.contains(&name) {
            self.from_host.push(name);
        }
        self
    }

    /// These grants with the variables of [`env`](Self::env) given the
    /// values they have in this process now.
    pub(crate) fn resolved(mut self) -> Result<Grants, Error> {
        for name in std::mem::take(&mut self.from_host) {
            let value = match std::env::var(&name) {
                Ok(value) => value,
                // Not the error's own words: `NotUnicode` quotes the value.
                Err(std::env::VarError::NotPresent) => {
                    return Err(Error::Config {
                        message: format!("the granted environment variable `{name}` is not set"),
                    });
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(Error::Config {
                        message: format!("the granted environment variable `{name}` is not UTF-8"),
                    });
                }
            };
            self = self.env_value(name, value);
        }
        Ok(self)
    }

    /// The environment variable `name` with `value`.
    pub fn env_value(mut self, name: impl Into<String>, value: impl Into<String>) -> Grants {
        let name = name.into();
        self.env.retain(|(existing, _)| *existing != name);
        self.from_host.retain(|existing| *existing != name);
        self.env.push((name, value.into()));
        self
    }

    /// Outgoing HTTP as `http` allows it, added to what is already
    /// allowed (its settings, where it has them, replace the earlier
    /// ones).
    pub fn http(mut self, http: HttpGrant) -> Grants {
        self.http = std::mem::take(&mut self.http).and(&http);
        self
    }

    /// Outgoing HTTP to the origins `pattern` matches, with the default
    /// limits: `Grants::new().http(HttpGrant::new().allow(pattern))`.
    pub fn allow_http(self, pattern: impl AsRef<str>) -> Grants {
        self.http(HttpGrant::new().allow(pattern))
    }

    /// The outgoing HTTP granted (nothing allowed unless
    /// [`HttpGrant::is_granted`]).
    pub fn http_grant(&self) -> &HttpGrant {
        &self.http
    }

    /// Whether calls with these grants may be answered by the result cache
    /// and merged with identical calls: no directory, and no HTTP unless
    /// its grant is declared deterministic.
    pub(crate) fn keep_repeatable(&self) -> bool {
        self.dirs.is_empty() && (!self.http.is_granted() || self.http.is_deterministic())
    }

    /// These grants and `more`'s (a variable in both takes `more`'s value).
    pub fn and(mut self, more: &Grants) -> Grants {
        self.dirs.extend(more.dirs.iter().cloned());
        self.http = std::mem::take(&mut self.http).and(&more.http);
        for (name, value) in &more.env {
            self = self.env_value(name.clone(), value.clone());
        }
        for name in &more.from_host {
            self = self.env(name.clone());
        }
        self
    }

    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
            && self.env.is_empty()
            && self.from_host.is_empty()
            && self.http.is_empty()
    }

    /// The granted directories: (host path, guest path).
    pub fn dirs(&self) -> impl Iterator<Item = (&Path, &str)> {
        self.dirs
            .iter()
            .map(|dir| (dir.host.as_path(), dir.guest.as_str()))
    }

    /// The names of the granted environment variables.
    pub fn env_names(&self) -> impl Iterator<Item = &str> {
        self.env
            .iter()
            .map(|(name, _)| name.as_str())
            .chain(self.from_host.iter().map(String::as_str))
    }

    /// A `config` error unless every directory exists and every guest path
    /// is absolute, free of `..` and granted once; every variable name is
    /// non-empty and free of `=` and NUL; every HTTP pattern parses.
    pub(crate) fn check(&self, whose: &str) -> Result<(), Error> {
        let config = |message: String| Error::Config {
            message: format!("grants of {whose}: {message}"),
        };
        if let Some(problem) = self.http.problem() {
            return Err(config(problem));
        }
        for (index, dir) in self.dirs.iter().enumerate() {
            if !dir.host.is_dir() {
                return Err(config(format!("{} is not a directory", dir.host.display())));
            }
            if !dir.guest.starts_with('/')
                || dir.guest.split('/').any(|part| part == "..")
                || dir.guest.contains('\0')
            {
                return Err(config(format!(
                    "the guest path `{}` of {} is not an absolute path without `..`",
                    dir.guest.escape_debug(),
                    dir.host.display()
                )));
            }
            // `/data`, `/data/` and `/./data` are one path.
            let normal = |guest: &str| {
                let parts: Vec<&str> = guest
                    .split('/')
                    .filter(|part| !part.is_empty() && *part != ".")
                    .collect();
                parts.join("/")
            };
            if self.dirs[..index]
                .iter()
                .any(|earlier| normal(&earlier.guest) == normal(&dir.guest))
            {
                return Err(config(format!(
                    "the guest path `{}` is granted twice",
                    dir.guest
                )));
            }
        }
        for (name, value) in &self.env {
            if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
                return Err(config(format!(
                    "`{}` is not an environment variable name (or its value holds NUL)",
                    name.escape_debug()
                )));
            }
        }
        Ok(())
    }
}

/// Grants read from TOML, as in a grants file (`xcs.toml`): a `default`
/// table for every operator, and one per operator name or digest
/// (`sha256:…`), added to the default ones for it.
///
/// ```toml
/// [grants.default]
/// env = ["API_KEY"]                  # the values this process has
///                                    # when the host is built
///
/// [grants.summarize]
/// dirs = ["./prompts::/prompts"]     # HOST::GUEST, read-only; HOST
///                                    # relative to the file's directory
/// http = ["https://api.example.com"] # origins (see `HttpGrant`)
/// http-timeout = "10s"               # per request (default 30s)
/// http-max-response-bytes = "1MiB"   # per response (default 16MiB)
/// http-max-requests = 10             # per call (default 100)
/// http-private-addresses = false     # names at private addresses
/// http-deterministic = false         # results may be cached
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantsTable {
    pub(crate) default: Grants,
    pub(crate) by_operator: std::collections::BTreeMap<String, Grants>,
}

/// One table of a grants file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantSpec {
    #[serde(default)]
    dirs: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    http: Vec<toml::Spanned<String>>,
    #[serde(default, rename = "http-timeout")]
    http_timeout: Option<String>,
    #[serde(default, rename = "http-max-response-bytes")]
    http_max_response_bytes: Option<toml::Value>,
    #[serde(default, rename = "http-max-requests")]
    http_max_requests: Option<u32>,
    #[serde(default, rename = "http-private-addresses")]
    http_private_addresses: Option<bool>,
    #[serde(default, rename = "http-deterministic")]
    http_deterministic: Option<bool>,
}

impl GrantSpec {
    /// The HTTP grant of the table `key` of `text` (whose lines a bad
    /// pattern's error names).
    fn http(&self, key: &str, text: &str) -> Result<HttpGrant, Error> {
        let config = |message: String| Error::Config {
            message: format!("grants of `{key}`: {message}"),
        };
        let mut http = HttpGrant::new();
        for pattern in &self.http {
            http = http.allow(pattern.get_ref());
            if let Some(problem) = http.problem() {
                let line = text
                    .get(..pattern.span().start)
                    .map_or(0, |before| before.lines().count().max(1));
                return Err(config(format!("line {line}: {problem}")));
            }
        }
        if let Some(text) = &self.http_timeout {
            let timeout = humantime::parse_duration(text).map_err(|error| {
                config(format!("http-timeout `{}`: {error}", text.escape_debug()))
            })?;
            http = http.timeout(timeout);
        }
        if let Some(value) = &self.http_max_response_bytes {
            let bytes = match value {
                toml::Value::Integer(bytes) => u64::try_from(*bytes).ok(),
                toml::Value::String(text) => crate::limits::parse_size(text).ok(),
                _ => None,
            }
            .ok_or_else(|| {
                config(format!(
                    "http-max-response-bytes `{value}` is not a size (e.g. 1048576 or \"1MiB\")"
                ))
            })?;
            http = http.max_response_bytes(bytes);
        }
        if let Some(requests) = self.http_max_requests {
            http = http.max_requests(requests);
        }
        if let Some(allowed) = self.http_private_addresses {
            http = http.private_addresses(allowed);
        }
        if let Some(deterministic) = self.http_deterministic {
            http = http.deterministic(deterministic);
        }
        Ok(http)
    }
}

/// The `[grants]` of a TOML document, and nothing else.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsFile {
    #[serde(default)]
    grants: std::collections::BTreeMap<String, GrantSpec>,
}

impl GrantsTable {
    /// Reads a grants file: only `[grants.<default | operator | digest>]`
    /// tables with `dirs` and `env`; host paths relative to `base`, the
    /// variables' values read when the host is built. A `config` error
    /// names the line of anything else.
    pub fn from_toml(text: &str, base: &Path) -> Result<GrantsTable, Error> {
        let file: GrantsFile = toml::from_str(text).map_err(|error| Error::Config {
            message: format!("grants file: {}", error.to_string().trim_end()),
        })?;
        GrantsTable::from_specs(file.grants, base, text)
    }

    /// The table of `[grants.*]` specs parsed from `text` (a graph file's
    /// too).
    pub(crate) fn from_specs(
        specs: std::collections::BTreeMap<String, GrantSpec>,
        base: &Path,
        text: &str,
    ) -> Result<GrantsTable, Error> {
        let mut table = GrantsTable::default();
        for (key, spec) in specs {
            let mut grants = Grants::new();
            for dir in &spec.dirs {
                let Some((host, guest)) = dir.rsplit_once("::") else {
                    return Err(Error::Config {
                        message: format!(
                            "grants of `{key}`: `{}` is not HOST::GUEST (e.g. \"./data::/data\")",
                            dir.escape_debug()
                        ),
                    });
                };
                grants = grants.read_dir(base.join(host), guest);
            }
            for name in &spec.env {
                grants = grants.env(name.clone());
            }
            grants = grants.http(spec.http(&key, text)?);
            if key == "default" {
                table.default = grants;
            } else {
                table.by_operator.insert(key, grants);
            }
        }
        Ok(table)
    }

    /// This table and `more`'s, each operator's grants added up.
    pub fn and(mut self, more: &GrantsTable) -> GrantsTable {
        self.default = self.default.and(&more.default);
        for (key, grants) in &more.by_operator {
            let mine = self.by_operator.remove(key).unwrap_or_default();
            self.by_operator.insert(key.clone(), mine.and(grants));
        }
        self
    }

    /// This table with every relative host path made relative to `base`
    /// (the directory of the file it was read from).
    pub fn relative_to(mut self, base: &Path) -> GrantsTable {
        let rebase = |grants: &mut Grants| {
            for dir in &mut grants.dirs {
                if dir.host.is_relative() {
                    dir.host = base.join(&dir.host);
                }
            }
        };
        rebase(&mut self.default);
        self.by_operator.values_mut().for_each(rebase);
        self
    }

    /// The table as a grants file's `[grants]` tables: `dirs` as
    /// `HOST::GUEST`, `env` by name (the values are read again where the
    /// file is read).
    pub(crate) fn to_toml(&self) -> toml::Table {
        let write = |grants: &Grants| {
            let mut table = toml::Table::new();
            if !grants.dirs.is_empty() {
                let dirs = grants
                    .dirs
                    .iter()
                    .map(|dir| {
                        toml::Value::String(format!("{}::{}", dir.host.display(), dir.guest))
                    })
                    .collect();
                table.insert("dirs".into(), toml::Value::Array(dirs));
            }
            let names: Vec<toml::Value> = grants
                .env_names()
                .map(|name| toml::Value::String(name.to_owned()))
                .collect();
            if !names.is_empty() {
                table.insert("env".into(), toml::Value::Array(names));
            }
            write_http(&grants.http, &mut table);
            toml::Value::Table(table)
        };
        let mut tables = toml::Table::new();
        if !self.default.is_empty() {
            tables.insert("default".into(), write(&self.default));
        }
        for (key, grants) in &self.by_operator {
            tables.insert(key.clone(), write(grants));
        }
        tables
    }

    /// Whether nothing is granted to any operator.
    pub fn is_empty(&self) -> bool {
        self.default.is_empty() && self.by_operator.values().all(Grants::is_empty)
    }

    /// This table with `grants` added to every operator's.
    pub fn and_default(mut self, grants: &Grants) -> GrantsTable {
        self.default = self.default.and(grants);
        self
    }

    /// The grants of every operator.
    pub fn default_grants(&self) -> &Grants {
        &self.default
    }

    /// The grants by operator name or digest, added to the default ones.
    pub fn operators(&self) -> impl Iterator<Item = (&str, &Grants)> {
        self.by_operator
            .iter()
            .map(|(key, grants)| (key.as_str(), grants))
    }
}

/// `http`'s keys of a grants file's table.
fn write_http(http: &HttpGrant, table: &mut toml::Table) {
    let patterns: Vec<toml::Value> = http
        .patterns()
        .map(|pattern| toml::Value::String(pattern.to_owned()))
        .collect();
    if !patterns.is_empty() {
        table.insert("http".into(), toml::Value::Array(patterns));
    }
    let duration =
        |duration: Duration| toml::Value::String(humantime::format_duration(duration).to_string());
    let settings = [
        ("http-timeout", http.timeout.map(duration)),
        (
            "http-max-response-bytes",
            http.max_response_bytes
                .map(|bytes| toml::Value::Integer(i64::try_from(bytes).unwrap_or(i64::MAX))),
        ),
        (
            "http-max-requests",
            http.max_requests
                .map(|requests| toml::Value::Integer(i64::from(requests))),
        ),
        (
            "http-private-addresses",
            http.private_addresses.map(toml::Value::Boolean),
        ),
        (
            "http-deterministic",
            http.deterministic.map(toml::Value::Boolean),
        ),
    ];
    for (key, value) in settings {
        if let Some(value) = value {
            table.insert(key.into(), value);
        }
    }
}
