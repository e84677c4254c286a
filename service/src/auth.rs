//! Bearer tokens with roles, for both listeners. The tokens file holds lines `ROLE TOKEN` (`#` comments and blank
//! lines allowed); a token may appear under several roles. `ingest` may call IngestService, `query` QueryService
//! and reflection, `metrics` may scrape `/metrics`; health checks stay open. Tokens are compared in constant time
//! against every entry, never logged, and the file is re-read when it changes (`reload`).

use std::path::Path;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::reload::Reloading;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Ingest,
    Query,
    Metrics,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Query => "query",
            Role::Metrics => "metrics",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        [Role::Ingest, Role::Query, Role::Metrics].into_iter().find(|r| r.as_str() == s)
    }
}

/// Why a request was refused; `reason()` is the stable label of `framewatch_auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No `authorization: Bearer ...` header (gRPC UNAUTHENTICATED, HTTP 401).
    MissingToken,
    /// A token that is in no line of the file (UNAUTHENTICATED, 401).
    UnknownToken,
    /// A known token without the role this call needs (PERMISSION_DENIED, 403).
    WrongRole,
}

impl Denied {
    pub const ALL: [Denied; 3] = [Denied::MissingToken, Denied::UnknownToken, Denied::WrongRole];

    pub fn reason(self) -> &'static str {
        match self {
            Denied::MissingToken => "missing_token",
            Denied::UnknownToken => "unknown_token",
            Denied::WrongRole => "wrong_role",
        }
    }

    pub fn message(self, role: Role) -> String {
        match self {
            Denied::MissingToken => {
                format!("send `authorization: Bearer TOKEN` with a token of role {}", role.as_str())
            }
            Denied::UnknownToken => "the bearer token is not in the tokens file".to_string(),
            Denied::WrongRole => format!("the bearer token does not have role {}", role.as_str()),
        }
    }
}

/// The parsed tokens file.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<(Role, Vec<u8>)>,
}

impl std::fmt::Debug for Tokens {
    // Never prints a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("entries", &self.entries.len()).finish()
    }
}

/// Shortest token accepted: guessing one must not be practical.
const MIN_TOKEN_LEN: usize = 16;

impl Tokens {
    /// Parses `ROLE TOKEN` lines; an error names the line (never its token).
    pub fn parse(text: &str) -> anyhow::Result<Tokens> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(role), Some(token), None) = (words.next(), words.next(), words.next()) else {
                anyhow::bail!("line {}: expected `ROLE TOKEN`", i + 1);
            };
            let Some(role) = Role::parse(role) else {
                anyhow::bail!("line {}: role {role:?} is not one of ingest, query, metrics", i + 1);
            };
            if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                anyhow::bail!(
                    "line {}: a token must be at least {MIN_TOKEN_LEN} printable ASCII characters (e.g. `openssl rand \
                     -hex 32`)",
                    i + 1
                );
            }
            entries.push((role, token.as_bytes().to_vec()));
        }
        if entries.is_empty() {
            anyhow::bail!("no tokens: every call would be refused");
        }
        Ok(Tokens { entries })
    }

    pub fn load(path: &Path) -> anyhow::Result<Tokens> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        Tokens::parse(&text).with_context(|| format!("server.auth.tokens_file {}", path.display()))
    }

    /// Checks an `authorization` header value for `role`. Every entry is compared, in constant time per entry,
    /// so the time taken does not tell which entry (or how much of one) matched.
    pub fn check(&self, authorization: Option<&[u8]>, role: Role) -> Result<(), Denied> {
        let Some(token) = authorization.and_then(bearer) else { return Err(Denied::MissingToken) };
        let (mut known, mut allowed) = (false, false);
        for (r, t) in &self.entries {
            let eq = constant_time_eq(t, token);
            known |= eq;
            allowed |= eq & (*r == role);
        }
        match (known, allowed) {
            (_, true) => Ok(()),
            (true, false) => Err(Denied::WrongRole),
            (false, _) => Err(Denied::UnknownToken),
        }
    }
}

/// The token of `Bearer TOKEN` (the scheme is case-insensitive, RFC 7235).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then(|| rest.trim_ascii()).filter(|t| !t.is_empty())
}

/// Equal lengths and bytes, in time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The tokens in service (swapped on reload) and the failure counter; cheap to clone.
#[derive(Debug, Clone)]
pub struct Auth {
    tokens: Arc<Reloading<Tokens>>,
    failures: Family<[(&'static str, &'static str); 3], Counter>,
}

impl Auth {
    pub fn new(tokens: Arc<Reloading<Tokens>>, registry: &mut Registry) -> Auth {
        let failures = Family::default();
        registry.register(
            "framewatch_auth_failures",
            "Requests refused for their bearer token, by listener (grpc, http), role needed and reason \
             (missing_token, unknown_token, wrong_role)",
            failures.clone(),
        );
        // Every (listener, role) pair the server checks, at 0 for every reason, so a rate() over refusals has a
        // zero to start from (gRPC serves ingest and query; HTTP /metrics and the web view).
        for (listener, role) in
            [("grpc", Role::Ingest), ("grpc", Role::Query), ("http", Role::Metrics), ("http", Role::Query)]
        {
            for d in Denied::ALL {
                let _ =
                    failures.get_or_create(&[("listener", listener), ("role", role.as_str()), ("reason", d.reason())]);
            }
        }
        Auth { tokens, failures }
    }

    /// Checks and, when refused, counts.
    pub fn check(&self, listener: &'static str, authorization: Option<&[u8]>, role: Role) -> Result<(), Denied> {
        self.tokens.get().check(authorization, role).inspect_err(|d| {
            self.failures
                .get_or_create(&[("listener", listener), ("role", role.as_str()), ("reason", d.reason())])
                .inc();
        })
    }
}

/// A tonic interceptor requiring `role` (everything passes when auth is off): UNAUTHENTICATED without a known
/// token, PERMISSION_DENIED for a token without the role.
#[derive(Debug, Clone)]
pub struct GrpcAuth {
    auth: Option<Auth>,
    role: Role,
}

impl GrpcAuth {
    pub fn new(auth: Option<&Auth>, role: Role) -> GrpcAuth {
        GrpcAuth { auth: auth.cloned(), role }
    }
}

impl tonic::service::Interceptor for GrpcAuth {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(auth) = &self.auth else { return Ok(request) };
        let header = request.metadata().get("authorization").map(|v| v.as_bytes());
        match auth.check("grpc", header, self.role) {
            Ok(()) => Ok(request),
            Err(d @ Denied::WrongRole) => Err(tonic::Status::permission_denied(d.message(self.role))),
            Err(d) => Err(tonic::Status::unauthenticated(d.message(self.role))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# comment\n\ningest 0123456789abcdef-ingest\nquery  0123456789abcdef-query\nmetrics \
                        0123456789abcdef-query\n";

    #[test]
    fn roles_and_refusals() {
        let t = Tokens::parse(FILE).expect("parses");
        assert_eq!(t.check(Some(b"Bearer 0123456789abcdef-ingest"), Role::Ingest), Ok(()));
        assert_eq!(t.check(Some(b"bearer  0123456789abcdef-ingest "), Role::Ingest), Ok(()));
        assert_eq!(t.check(Some(b"Bearer 0123456789abcdef-ingest"), Role::Query), Err(Denied::WrongRole));
        // One token under two roles.
        assert_eq!(t.check(Some(b"Bearer 0123456789abcdef-query"), Role::Metrics), Ok(()));
        assert_eq!(t.check(Some(b"Bearer 0123456789abcdef-query"), Role::Ingest), Err(Denied::WrongRole));
        assert_eq!(t.check(Some(b"Bearer 0123456789abcdef-ingesT"), Role::Ingest), Err(Denied::UnknownToken));
        assert_eq!(t.check(Some(b"Bearer 0123456789abcdef-inges"), Role::Ingest), Err(Denied::UnknownToken));
        assert_eq!(t.check(Some(b"Basic 0123456789abcdef-ingest"), Role::Ingest), Err(Denied::MissingToken));
        assert_eq!(t.check(Some(b"Bearer "), Role::Ingest), Err(Denied::MissingToken));
        assert_eq!(t.check(None, Role::Ingest), Err(Denied::MissingToken));
    }

    #[test]
    fn bad_files_name_the_line_and_never_the_token() {
        for (text, says) in [
            ("ingest\n", "line 1: expected `ROLE TOKEN`"),
            ("admin 0123456789abcdef0123\n", "line 1: role \"admin\""),
            ("# c\ningest short\n", "line 2: a token must be at least 16"),
            ("ingest 0123456789abcdef extra\n", "line 1: expected"),
            ("# nothing\n", "no tokens"),
        ] {
            let e = format!("{:#}", Tokens::parse(text).expect_err(text));
            assert!(e.contains(says), "{text:?}: {e}");
            assert!(!e.contains("short") && !e.contains("0123456789abcdef"), "a token leaked into {e:?}");
        }
        let t = Tokens::parse("ingest 0123456789abcdef-secret\n").expect("parses");
        assert!(!format!("{t:?}").contains("secret"));
    }
}
