//! The backend's configuration: the server, the TSIG key and how often to resync.

use super::TSIG_FUDGE;
use crate::core::config::FieldError;
use crate::core::naming::normalize;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{Name, TSigner};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The TSIG algorithms the backend signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl Algorithm {
    /// Parses the `--tsig-algorithm` value (BIND's spelling, any case).
    pub fn parse(s: &str) -> Option<Algorithm> {
        match s.trim().trim_end_matches('.').to_ascii_lowercase().as_str() {
            "hmac-sha256" => Some(Algorithm::HmacSha256),
            "hmac-sha384" => Some(Algorithm::HmacSha384),
            "hmac-sha512" => Some(Algorithm::HmacSha512),
            _ => None,
        }
    }

    pub(crate) fn tsig(self) -> TsigAlgorithm {
        match self {
            Algorithm::HmacSha256 => TsigAlgorithm::HmacSha256,
            Algorithm::HmacSha384 => TsigAlgorithm::HmacSha384,
            Algorithm::HmacSha512 => TsigAlgorithm::HmacSha512,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::HmacSha256 => "hmac-sha256",
            Algorithm::HmacSha384 => "hmac-sha384",
            Algorithm::HmacSha512 => "hmac-sha512",
        }
    }
}

/// The backend's settings as given: checked by [`Rfc2136Config::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rfc2136Settings {
    /// The primary server to read from and update.
    pub server: Option<SocketAddr>,
    /// TSIG key name, as in the server's key clause.
    pub key_name: Option<String>,
    /// File holding the TSIG secret, base64 (or a whole BIND key clause).
    pub secret_file: Option<PathBuf>,
    /// TSIG algorithm, BIND's spelling (`hmac-sha256`).
    pub algorithm: String,
    /// How often the zone is re-read and re-synced even without changes.
    pub resync: Duration,
}

/// The checked settings of the backend.
#[derive(Clone)]
pub struct Rfc2136Config {
    /// The primary server to read from and update.
    pub server: SocketAddr,
    /// TSIG key name, lower case, without the trailing dot.
    pub key_name: String,
    pub algorithm: Algorithm,
    /// How often the zone is re-read even without changes.
    pub resync: Duration,
    secret: Vec<u8>,
    pub(super) signer: TSigner,
}

impl fmt::Debug for Rfc2136Config {
    /// Everything but the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rfc2136Config")
            .field("server", &self.server)
            .field("key_name", &self.key_name)
            .field("algorithm", &self.algorithm)
            .field("resync", &self.resync)
            .finish_non_exhaustive()
    }
}

fn required(field: &'static str, what: &str) -> FieldError {
    FieldError::new(
        field,
        "",
        format!("required for the rfc2136 backend ({what})"),
    )
}

impl Rfc2136Config {
    /// Checks what the rfc2136 backend needs; every error names its field.
    pub fn new(s: &Rfc2136Settings) -> Result<Rfc2136Config, FieldError> {
        let server = s
            .server
            .ok_or_else(|| required("server", "IP:PORT of the primary server to update"))?;
        let key_name = s
            .key_name
            .as_deref()
            .map(normalize)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                required(
                    "key_name",
                    "the name of the TSIG key, as in the server's key clause",
                )
            })?;
        let key_dns = Name::from_ascii(format!("{key_name}.")).map_err(|e| {
            FieldError::new("key_name", &key_name, format!("not a valid key name: {e}"))
        })?;
        let path = s
            .secret_file
            .as_deref()
            .ok_or_else(|| required("secret_file", "a file holding the TSIG secret in base64"))?;
        let secret = read_secret(path)?;
        let algorithm = Algorithm::parse(&s.algorithm).ok_or_else(|| {
            FieldError::new(
                "algorithm",
                &s.algorithm,
                "not supported; use hmac-sha256 (the default), hmac-sha384 or hmac-sha512",
            )
        })?;
        if s.resync.is_zero() {
            return Err(FieldError::new(
                "resync",
                "0s",
                "must be longer than zero: it is the wait between two reads of the zone",
            ));
        }
        let signer =
            TSigner::new(secret.clone(), algorithm.tsig(), key_dns, TSIG_FUDGE).map_err(|e| {
                FieldError::new(
                    "algorithm",
                    algorithm.as_str(),
                    format!("cannot sign with it: {e}"),
                )
            })?;
        Ok(Rfc2136Config {
            server,
            key_name,
            algorithm,
            resync: s.resync,
            secret,
            signer,
        })
    }

    /// The secret's length in bytes (never the secret itself).
    pub fn secret_len(&self) -> usize {
        self.secret.len()
    }
}

/// Reads a base64 TSIG secret: the bare secret (surrounding white space is fine),
/// or a whole BIND key clause as `tsig-keygen` prints it (`secret "...";` is used).
/// The embedded server reads its transfer keys with it too.
pub(crate) fn read_secret(path: &Path) -> Result<Vec<u8>, FieldError> {
    let shown = path.display().to_string();
    let bad = |reason: String| FieldError::new("secret_file", &shown, reason);
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("reading it: {e}")))?;
    let encoded: String = match text.find("secret") {
        Some(at) => text[at..].split('"').nth(1).unwrap_or_default().to_string(),
        None => text.to_string(),
    };
    let encoded: String = encoded.chars().filter(|c| !c.is_whitespace()).collect();
    if encoded.is_empty() {
        return Err(bad("it holds no secret".into()));
    }
    let secret = data_encoding::BASE64
        .decode(encoded.as_bytes())
        .map_err(|e| {
            bad(format!(
                "it does not hold a base64 secret (as in BIND's key clause): {e}"
            ))
        })?;
    if secret.is_empty() {
        return Err(bad("it holds an empty secret".into()));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> Rfc2136Settings {
        let secret = dir.join("secret");
        std::fs::write(&secret, "c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n").unwrap();
        Rfc2136Settings {
            server: Some("127.0.0.1:5300".parse().unwrap()),
            key_name: Some("Anypost-Key.".into()),
            secret_file: Some(secret),
            algorithm: "hmac-sha256".into(),
            resync: Duration::from_secs(300),
        }
    }

    fn config_error(s: &Rfc2136Settings) -> (&'static str, String) {
        let e = Rfc2136Config::new(s).unwrap_err();
        (e.field, e.reason)
    }

    #[test]
    fn config_from_settings() {
        let dir = tempfile::tempdir().unwrap();
        let c = Rfc2136Config::new(&settings(dir.path())).unwrap();
        assert_eq!(c.key_name, "anypost-key");
        assert_eq!(c.algorithm, Algorithm::HmacSha256);
        assert_eq!(c.secret_len(), "secret-secret-secret".len());
        assert!(!format!("{c:?}").contains("c2Vj"), "{c:?}");
    }

    #[test]
    fn config_errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let good = settings(dir.path());

        let mut a = good.clone();
        a.server = None;
        let (field, why) = config_error(&a);
        assert_eq!(field, "server");
        assert!(why.starts_with("required for the rfc2136 backend"), "{why}");

        let mut a = good.clone();
        a.key_name = None;
        assert_eq!(config_error(&a).0, "key_name");

        let mut a = good.clone();
        a.secret_file = None;
        assert_eq!(config_error(&a).0, "secret_file");

        let mut a = good.clone();
        a.secret_file = Some(dir.path().join("nope"));
        let e = Rfc2136Config::new(&a).unwrap_err();
        assert_eq!(e.field, "secret_file");
        assert!(
            e.value.contains("nope") && e.reason.starts_with("reading it"),
            "{e}"
        );

        let bad = dir.path().join("bad");
        std::fs::write(&bad, "not base64 at all!").unwrap();
        let mut a = good.clone();
        a.secret_file = Some(bad);
        let (field, why) = config_error(&a);
        assert_eq!(field, "secret_file");
        assert!(why.contains("does not hold a base64 secret"), "{why}");

        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let mut a = good.clone();
        a.secret_file = Some(empty);
        assert!(config_error(&a).1.contains("holds no secret"));

        let mut a = good.clone();
        a.algorithm = "hmac-md5".into();
        let e = Rfc2136Config::new(&a).unwrap_err();
        assert_eq!((e.field, e.value.as_str()), ("algorithm", "hmac-md5"));
        assert!(e.reason.starts_with("not supported"), "{e}");

        let mut a = good.clone();
        a.resync = Duration::ZERO;
        assert_eq!(config_error(&a).0, "resync");

        let mut a = good;
        a.algorithm = "HMAC-SHA512".into();
        assert_eq!(
            Rfc2136Config::new(&a).unwrap().algorithm,
            Algorithm::HmacSha512
        );
    }

    #[test]
    fn a_bind_key_clause_is_accepted_as_the_secret_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("key.conf");
        std::fs::write(
            &f,
            "key \"anypost\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0\";\n};\n",
        )
        .unwrap();
        assert_eq!(read_secret(&f).unwrap(), b"secret");
    }
}
