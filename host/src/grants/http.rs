//! Outgoing HTTP grants: the origins an operator may reach through
//! `wasi:http/outgoing-handler`, and the limits of one call's requests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// How long a request may take to connect and send its response headers,
/// and to send the next piece of its body, unless the grant says
/// otherwise (never past the call's deadline).
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// The most bytes of one response body a guest may read, unless the grant
/// says otherwise.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 16 << 20;
/// The most requests one call may make, unless the grant says otherwise.
pub const DEFAULT_MAX_REQUESTS: u32 = 100;

/// Outgoing HTTP an operator may make: requests to the origins on its
/// allow-list, each bounded in time and size, a bounded number per call.
/// A request to anything else fails inside the guest with
/// `http-request-denied`, and is counted and logged on the host.
///
/// A pattern is `scheme://host[:port]`:
/// - `scheme` is `http` or `https`;
/// - `host` is a DNS name (`api.example.com`), a name's subdomains
///   (`*.example.com`: `a.example.com`, `a.b.example.com`, not
///   `example.com`), or an IP literal (`127.0.0.1`, `[::1]`);
/// - `port` is a number or `*` (any port); left out, it is the scheme's
///   (443 or 80).
///
/// A name is only ever connected to at a public address: one that
/// resolves to a loopback, private, link-local or otherwise non-public
/// address is refused (`destination-ip-prohibited`) unless
/// [`private_addresses`](Self::private_addresses) allows it. An IP literal
/// on the list is reached as written: listing `http://127.0.0.1:8080` is
/// itself the explicit permission. The addresses checked are the ones
/// connected to, so a name cannot be made to resolve elsewhere between
/// the check and the connection.
///
/// ```
/// use std::time::Duration;
///
/// let http = xcs::HttpGrant::new()
///     .allow("https://api.example.com")
///     .allow("https://*.example.org:8443")
///     .timeout(Duration::from_secs(10))
///     .max_response_bytes(1 << 20);
/// let grants = xcs::Grants::new().http(http).env("API_KEY");
/// assert_eq!(grants.http_grant().patterns().count(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct HttpGrant {
    pub(crate) allow: Vec<OriginPattern>,
    /// Patterns that did not parse, with why: a `config` error when the
    /// host is built.
    pub(crate) bad: Vec<(String, String)>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_response_bytes: Option<u64>,
    pub(crate) max_requests: Option<u32>,
    pub(crate) private_addresses: Option<bool>,
    pub(crate) deterministic: Option<bool>,
}

impl HttpGrant {
    /// No origin allowed, nothing set (a `const` [`HttpGrant::new`]).
    pub(crate) const NONE: HttpGrant = HttpGrant {
        allow: Vec::new(),
        bad: Vec::new(),
        timeout: None,
        max_response_bytes: None,
        max_requests: None,
        private_addresses: None,
        deterministic: None,
    };

    /// No origin allowed, the default limits.
    pub fn new() -> HttpGrant {
        HttpGrant::default()
    }

    /// Allows requests to the origins `pattern` matches (see the type's
    /// docs). A pattern that does not parse is a `config` error when the
    /// host is built, naming it.
    pub fn allow(mut self, pattern: impl AsRef<str>) -> HttpGrant {
        let pattern = pattern.as_ref();
        match OriginPattern::parse(pattern) {
            Ok(parsed) => {
                if !self.allow.contains(&parsed) {
                    self.allow.push(parsed);
                }
            }
            Err(why) => self.bad.push((pattern.to_owned(), why)),
        }
        self
    }

    /// How long each request may take to connect and send its response
    /// headers, and then each piece of its body (default
    /// [`DEFAULT_HTTP_TIMEOUT`]); never more than what is left of the
    /// call's deadline, and the guest's own shorter request options
    /// count.
    pub fn timeout(mut self, timeout: Duration) -> HttpGrant {
        self.timeout = Some(timeout);
        self
    }

    /// The most bytes of one response body (default
    /// [`DEFAULT_MAX_RESPONSE_BYTES`]): a longer one fails in the guest
    /// with `http-response-body-size`.
    pub fn max_response_bytes(mut self, bytes: u64) -> HttpGrant {
        self.max_response_bytes = Some(bytes);
        self
    }

    /// The most requests one call may make (default
    /// [`DEFAULT_MAX_REQUESTS`]): past it, a request fails in the guest
    /// with `connection-limit-reached`. The count is per attempt: each
    /// attempt of a retried call starts a fresh sandbox with its own.
    pub fn max_requests(mut self, requests: u32) -> HttpGrant {
        self.max_requests = Some(requests);
        self
    }

    /// Whether names on the list may be reached at loopback, private and
    /// other non-public addresses (default `false`; IP literals on the
    /// list are always reached as written).
    pub fn private_addresses(mut self, allowed: bool) -> HttpGrant {
        self.private_addresses = Some(allowed);
        self
    }

    /// Whether the responses are a function of the request, so that a
    /// deterministic operator's calls may still be answered by the result
    /// cache and merged with identical ones (default `false`: with HTTP
    /// granted, every call runs).
    pub fn deterministic(mut self, deterministic: bool) -> HttpGrant {
        self.deterministic = Some(deterministic);
        self
    }

    /// The allowed patterns, as written.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.allow.iter().map(|pattern| pattern.text.as_str())
    }

    /// Whether any origin is allowed.
    pub fn is_granted(&self) -> bool {
        !self.allow.is_empty()
    }

    /// The timeout of each request (see [`timeout`](Self::timeout)).
    pub fn request_timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_HTTP_TIMEOUT)
    }

    /// The response-body cap (see
    /// [`max_response_bytes`](Self::max_response_bytes)).
    pub fn response_bytes_cap(&self) -> u64 {
        self.max_response_bytes
            .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES)
    }

    /// The requests-per-call cap (see [`max_requests`](Self::max_requests)).
    pub fn requests_cap(&self) -> u32 {
        self.max_requests.unwrap_or(DEFAULT_MAX_REQUESTS)
    }

    /// Whether names may resolve to non-public addresses.
    pub fn allows_private_addresses(&self) -> bool {
        self.private_addresses.unwrap_or(false)
    }

    /// Whether the grant declares its responses deterministic.
    pub fn is_deterministic(&self) -> bool {
        self.deterministic.unwrap_or(false)
    }

    /// These grants and `more`'s: both allow-lists; `more`'s settings where
    /// it has them.
    pub(crate) fn and(mut self, more: &HttpGrant) -> HttpGrant {
        for pattern in &more.allow {
            if !self.allow.contains(pattern) {
                self.allow.push(pattern.clone());
            }
        }
        self.bad.extend(more.bad.iter().cloned());
        self.timeout = more.timeout.or(self.timeout);
        self.max_response_bytes = more.max_response_bytes.or(self.max_response_bytes);
        self.max_requests = more.max_requests.or(self.max_requests);
        self.private_addresses = more.private_addresses.or(self.private_addresses);
        self.deterministic = more.deterministic.or(self.deterministic);
        self
    }

    /// Whether nothing is allowed nor set.
    pub(crate) fn is_empty(&self) -> bool {
        *self == HttpGrant::default()
    }

    /// Why the grant is unusable, if it is: a pattern that did not parse,
    /// or a zero timeout.
    pub(crate) fn problem(&self) -> Option<String> {
        if let Some((pattern, why)) = self.bad.first() {
            return Some(format!(
                "`{}` is not an HTTP origin pattern: {why}",
                pattern.escape_debug()
            ));
        }
        if self.timeout == Some(Duration::ZERO) {
            return Some("the HTTP timeout is zero".into());
        }
        None
    }

    /// The first allowed pattern `destination` matches.
    pub(crate) fn matching(&self, destination: &Destination) -> Option<&OriginPattern> {
        self.allow
            .iter()
            .find(|pattern| pattern.matches(destination))
    }
}

/// The scheme of an origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn parse(text: &str) -> Option<Scheme> {
        match text.to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }

    pub(crate) fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A host, as requested or allowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Host {
    Ip(IpAddr),
    /// Lower case, without a trailing dot.
    Name(String),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// Where a request goes: what the allow-list is matched against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Destination {
    pub(crate) scheme: Scheme,
    pub(crate) host: Host,
    pub(crate) port: u16,
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
    }
}

impl Destination {
    /// The destination of a request to `scheme://authority`, or why it has
    /// none (an authority with user information, no host, a bad port or a
    /// host that is neither a name nor an IP address).
    pub(crate) fn of(scheme: &str, authority: &str) -> Result<Destination, String> {
        let scheme = Scheme::parse(scheme).ok_or_else(|| format!("the scheme `{scheme}`"))?;
        if authority.contains('@') {
            return Err("user information in the authority".into());
        }
        let (host, port) = split_authority(authority)?;
        let port = match port {
            None => scheme.default_port(),
            Some(port) => port
                .parse::<u16>()
                .map_err(|_| format!("the port `{port}`"))?,
        };
        Ok(Destination {
            scheme,
            host: parse_host(host)?,
            port,
        })
    }
}

/// `host[:port]` split, with an IPv6 literal's brackets removed.
fn split_authority(authority: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address without its `]`")?;
        return match after {
            "" => Ok((ip, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((ip, Some(port))),
                None => Err(format!("`{after}` after the IPv6 address")),
            },
        };
    }
    match authority.split_once(':') {
        Some((host, port)) if !port.contains(':') => Ok((host, Some(port))),
        Some(_) => Err("an IPv6 address must be written in brackets, e.g. [::1]".into()),
        None => Ok((authority, None)),
    }
}

/// An IP literal, or a DNS name (lower-cased, without a trailing dot).
fn parse_host(host: &str) -> Result<Host, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if name.is_empty() {
        return Err("no host".into());
    }
    if name.len() > 253 {
        return Err("a host name longer than 253 bytes".into());
    }
    for label in name.split('.') {
        let valid = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-');
        if !valid {
            return Err(format!("the host `{}`", host.escape_debug()));
        }
    }
    // `127.1` and `2130706433` are IPv4 to some resolvers: such a name is
    // not matched as a name.
    if name
        .split('.')
        .all(|label| label.bytes().all(|byte| byte.is_ascii_digit()))
    {
        return Err(format!(
            "the host `{host}`: an IPv4 address is four decimal numbers (e.g. 127.0.0.1)"
        ));
    }
    Ok(Host::Name(name))
}

/// One allowed origin pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct OriginPattern {
    /// As written.
    pub(crate) text: String,
    scheme: Scheme,
    host: HostPattern,
    /// `None`: any port.
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum HostPattern {
    Exactly(Host),
    /// Any name ending in `.` and this.
    SubdomainsOf(String),
}

impl OriginPattern {
    fn parse(text: &str) -> Result<OriginPattern, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("expected scheme://host[:port], e.g. https://api.example.com")?;
        let scheme = Scheme::parse(scheme)
            .ok_or_else(|| format!("the scheme `{scheme}` (http or https)"))?;
        // A trailing `/` is harmless; any other path, query or fragment is
        // not part of an origin.
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@']) || authority.chars().any(char::is_whitespace) {
            return Err("an origin has no path, query, user or spaces".into());
        }
        let (host, port) = split_authority(authority)?;
        let port = match port {
            None => Some(scheme.default_port()),
            Some("*") => None,
            Some(port) => match port.parse::<u16>() {
                Ok(0) | Err(_) => return Err(format!("the port `{port}` (1 to 65535, or *)")),
                Ok(port) => Some(port),
            },
        };
        let host = match host.strip_prefix("*.") {
            Some(parent) => match parse_host(parent)? {
                Host::Name(name) if !name.contains('.') => {
                    return Err(format!(
                        "`*.{name}` would allow every name under a top-level domain; \
                         name one below it (e.g. `*.example.{name}`)"
                    ));
                }
                Host::Name(name) => HostPattern::SubdomainsOf(name),
                Host::Ip(_) => return Err("an IP address has no subdomains".into()),
            },
            None if host.contains('*') => {
                return Err(
                    "a wildcard stands only for subdomains, first: `*.example.com`; \
                     every host cannot be allowed"
                        .into(),
                );
            }
            None => match parse_host(host)? {
                Host::Ip(ip) if ip.is_unspecified() => {
                    return Err(format!(
                        "`{host}` is no one address: connecting to it reaches this machine"
                    ));
                }
                exact => HostPattern::Exactly(exact),
            },
        };
        Ok(OriginPattern {
            text: text.to_owned(),
            scheme,
            host,
            port,
        })
    }

    fn matches(&self, destination: &Destination) -> bool {
        self.scheme == destination.scheme
            && self.port.is_none_or(|port| port == destination.port)
            && match (&self.host, &destination.host) {
                (HostPattern::Exactly(host), requested) => host == requested,
                (HostPattern::SubdomainsOf(parent), Host::Name(name)) => name
                    .strip_suffix(parent.as_str())
                    .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
                (HostPattern::SubdomainsOf(_), Host::Ip(_)) => false,
            }
    }
}

/// Whether `ip` is an address of the public internet: not loopback,
/// private, link-local, shared (CGNAT), unspecified, broadcast, multicast,
/// documentation, benchmarking or reserved; IPv6 addresses that carry an
/// IPv4 address (mapped, compatible, 6to4, NAT64) are judged by it.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => is_public_v6(ip),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b))
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 0 && c == 2)
        || (a == 192 && b == 88 && c == 99)
        || (a == 192 && b == 168)
        || (a == 198 && (18..20).contains(&b))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let embedded_v4 = |high: u16, low: u16| {
        Ipv4Addr::new((high >> 8) as u8, high as u8, (low >> 8) as u8, low as u8)
    };
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    match segments {
        // Unspecified, loopback and IPv4-compatible (deprecated) ::a.b.c.d.
        [0, 0, 0, 0, 0, 0, high, low] => high != 0 && is_public_v4(embedded_v4(high, low)),
        // IPv4-translated ::ffff:0:a.b.c.d.
        [0, 0, 0, 0, 0xffff, 0, high, low] => is_public_v4(embedded_v4(high, low)),
        // NAT64, well-known prefix.
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => is_public_v4(embedded_v4(high, low)),
        // Local-use NAT64 (RFC 8215).
        [0x64, 0xff9b, 1, ..] => false,
        // 6to4.
        [0x2002, high, low, ..] => is_public_v4(embedded_v4(high, low)),
        // IETF protocol assignments 2001::/23 (Teredo, benchmarking,
        // ORCHID, ...), and documentation 2001:db8::/32 and 3fff::/20.
        [0x2001, second, ..] if second < 0x200 => false,
        [0x2001, 0xdb8, ..] => false,
        [first, ..] if first & 0xfff0 == 0x3ff0 => false,
        // Only global unicast 2000::/3 is public: not unique local
        // fc00::/7, link-local fe80::/10, site-local fec0::/10, multicast,
        // discard-only 100::/64, SRv6 5f00::/16 nor anything reserved.
        [0x5f00, ..] => false,
        [first, ..] => first & 0xe000 == 0x2000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(url: &str) -> Destination {
        let (scheme, authority) = url.split_once("://").unwrap_or_default();
        Destination::of(scheme, authority).unwrap_or_else(|why| panic!("{url}: {why}"))
    }

    fn allows(pattern: &str, url: &str) -> bool {
        let grant = HttpGrant::new().allow(pattern);
        assert_eq!(grant.problem(), None, "{pattern}");
        grant.matching(&destination(url)).is_some()
    }

    #[test]
    fn patterns_match_scheme_host_and_port() {
        assert!(allows("https://api.example.com", "https://api.example.com"));
        assert!(allows(
            "https://api.example.com",
            "https://API.Example.com.:443"
        ));
        assert!(!allows("https://api.example.com", "http://api.example.com"));
        assert!(!allows(
            "https://api.example.com",
            "https://api.example.com:8443"
        ));
        assert!(!allows("https://api.example.com", "https://example.com"));
        assert!(!allows(
            "https://api.example.com",
            "https://api.example.com.evil.net"
        ));
        assert!(allows("https://*.example.com", "https://a.b.example.com"));
        assert!(!allows("https://*.example.com", "https://example.com"));
        assert!(!allows("https://*.example.com", "https://badexample.com"));
        assert!(allows("http://127.0.0.1:8080", "http://127.0.0.1:8080"));
        assert!(!allows("http://127.0.0.1:8080", "http://localhost:8080"));
        assert!(!allows("http://127.0.0.1:8080", "http://127.0.0.1:8081"));
        assert!(allows("http://127.0.0.1:*", "http://127.0.0.1:9"));
        assert!(allows("http://[::1]:80", "http://[0:0::1]"));
        assert!(!allows("https://*.example.com", "https://[::1]"));
    }

    #[test]
    fn bad_patterns_are_named() {
        for bad in [
            "api.example.com",
            "ftp://example.com",
            "https://*",
            "https://a.*.com",
            "https://*.1.2.3.4",
            "https://example.com/path",
            "https://user@example.com",
            "https://example.com:0",
            "https://example.com:99999",
            "https://::1",
            "https://2130706433",
            "https://exa mple.com",
            "https://",
            "https://*.com",
            "http://0.0.0.0:8080",
            "http://[::]:8080",
        ] {
            let grant = HttpGrant::new().allow(bad);
            let problem = grant.problem().unwrap_or_else(|| panic!("{bad} parsed"));
            assert!(problem.contains(bad), "{problem}");
            assert!(!grant.is_granted());
        }
    }

    #[test]
    fn public_addresses() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.31.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "2001:db8::1",
            "192.88.99.1",
            "fec0::1",
            "::ffff:0:a00:1",
            "64:ff9b:1::1",
            "2001::1",
            "2001:2::1",
            "3fff::1",
            "5f00::1",
            "100::1",
            "4000::1",
        ] {
            assert!(
                !is_public(private.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))),
                "{private}"
            );
        }
        for public in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "2001:4860::8888",
            "::ffff:8.8.8.8",
        ] {
            assert!(
                is_public(public.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))),
                "{public}"
            );
        }
    }
}
