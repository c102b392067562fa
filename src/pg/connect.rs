//! Opening a PostgreSQL connection: URL, password sources, TLS, keepalives.

use super::error::PgError;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;
use tracing::warn;

/// The connection half, driven by whoever owns it.
pub type Connection =
    tokio_postgres::Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

/// A half-open connection (peer gone without a FIN) is noticed by TCP keepalives after
/// about IDLE + INTERVAL * RETRIES seconds, and sooner by the listener's own ping.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_RETRIES: u32 = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Data sent but not acknowledged for this long ends the connection (`TCP_USER_TIMEOUT`):
/// without it a statement sent into a network partition waits for the kernel's
/// retransmissions (many minutes), and keepalives do not run while data is in flight.
const USER_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS that verifies the server against the system's root certificates, plus those in
/// `ca_file` (PEM) when given.
pub fn tls(ca_file: Option<&Path>) -> Result<MakeRustlsConnect, PgError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
    let mut pinned = Vec::new();
    if let Some(path) = ca_file {
        let ca = |reason: String| PgError::CaFile {
            path: path.to_path_buf(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| ca(crate::error::io_reason(&e)))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| ca(e.to_string()))?;
            roots.add(cert.clone()).map_err(|e| ca(e.to_string()))?;
            pinned.push(cert);
        }
        if pinned.is_empty() {
            return Err(ca("no PEM certificate in it".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| PgError::TlsSetup(e.to_string()))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::TlsSetup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier { webpki, pinned }))
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// The standard WebPKI verification, plus one case it refuses: a server presenting
/// exactly a certificate from `--ca-file`. That is the usual self-signed server
/// certificate (PostgreSQL's documentation makes one with `openssl req -x509`, which marks
/// it a CA), and WebPKI will not accept a CA certificate as the server's own. Trusting
/// the file's certificate byte for byte is what the person asked for; the server name
/// must still match it.
#[derive(Debug)]
struct Verifier {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    pinned: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// The errors WebPKI gives for a self-signed certificate presented as the server's own:
/// it is a CA (OpenSSL's default for `req -x509`), or has no issuer in the store.
fn refused_as_anchor(e: &rustls::Error) -> bool {
    match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => true,
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => matches!(
            other.0.downcast_ref::<webpki::Error>(),
            Some(webpki::Error::CaUsedAsEndEntity)
        ),
        _ => false,
    }
}

impl rustls::client::danger::ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Ok(v) => Ok(v),
            Err(e)
                if refused_as_anchor(&e)
                    && self
                        .pinned
                        .iter()
                        .any(|c| c.as_ref() == end_entity.as_ref()) =>
            {
                let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| e)?;
                cert.verify_is_valid_for_subject_name(server_name)
                    .map_err(|_| {
                        rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
                    })?;
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Parses the URL, fills in the password from `PGPASSWORD` or the pgpass file when the
/// URL has none, and sets keepalives and timeouts.
pub fn config(url: &str) -> Result<Config, PgError> {
    let mut cfg: Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| PgError::Url {
            url: crate::config::mask_password(url),
            reason: e.to_string(),
        })?;
    if cfg.get_password().is_none() {
        if let Some(pw) = std::env::var_os("PGPASSWORD").filter(|p| !p.is_empty()) {
            cfg.password(pw.as_encoded_bytes());
        } else if let Some(pw) = pgpass_lookup(&cfg) {
            cfg.password(pw);
        }
    }
    if cfg.get_user().is_none() {
        if let Ok(user) = std::env::var("PGUSER").or_else(|_| std::env::var("USER")) {
            cfg.user(user);
        }
    }
    cfg.application_name("tend")
        .connect_timeout(CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .keepalives_interval(KEEPALIVE_INTERVAL)
        .keepalives_retries(KEEPALIVE_RETRIES)
        .tcp_user_timeout(USER_TIMEOUT);
    Ok(cfg)
}

/// Connects per the URL's `sslmode`: `disable` never uses TLS; `require` insists on TLS
/// with a verified certificate; `prefer` (the default) uses verified TLS when the server
/// offers it, and plain TCP when the server does not offer TLS or its certificate cannot
/// be verified — never TLS with an unverified certificate.
pub async fn connect(url: &str, tls: &MakeRustlsConnect) -> Result<(Client, Connection), PgError> {
    connect_as(url, tls, "tend").await
}

/// [`connect`], naming the connection `application_name` in `pg_stat_activity` (the
/// daemon names its one connection after its host, so an administrator sees which
/// host holds which backend). The server cuts a name at 63 bytes.
pub async fn connect_as(
    url: &str,
    tls: &MakeRustlsConnect,
    application_name: &str,
) -> Result<(Client, Connection), PgError> {
    let mut cfg = config(url)?;
    cfg.application_name(application_name);
    match cfg.connect(tls.clone()).await {
        Ok(pair) => Ok(pair),
        Err(e) if cfg.get_ssl_mode() == SslMode::Prefer && is_tls_error(&e) => {
            warn!(
                error = %describe(&e),
                "TLS to PostgreSQL could not be verified; connecting without TLS (sslmode=prefer)"
            );
            cfg.ssl_mode(SslMode::Disable);
            cfg.connect(tls.clone())
                .await
                .map_err(|e| PgError::Server(describe(&e)))
        }
        Err(e) => Err(PgError::Server(describe(&e))),
    }
}

fn is_tls_error(e: &tokio_postgres::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                return true;
            }
        }
        source = s.source();
    }
    false
}

/// The error with its causes, on one line (tokio-postgres keeps the useful part in the
/// source chain: "error connecting to server: Connection refused").
pub fn describe(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Looks the password up in `PGPASSFILE` or `~/.pgpass` as libpq does: lines
/// `host:port:database:user:password`, `*` matches anything, `\` escapes `:` and `\`,
/// and a file readable by group or others is ignored.
fn pgpass_lookup(cfg: &Config) -> Option<String> {
    let path = match std::env::var_os("PGPASSFILE") {
        Some(p) => std::path::PathBuf::from(p),
        None => std::path::PathBuf::from(std::env::var_os("HOME")?).join(".pgpass"),
    };
    let meta = std::fs::metadata(&path).ok()?;
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o077 != 0 {
        warn!(path = %path.display(), "pgpass file is readable by others; ignored (chmod 0600)");
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let host = match cfg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(_)) | None => "localhost".to_string(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432).to_string();
    let user = cfg.get_user().unwrap_or_default().to_string();
    let db = cfg
        .get_dbname()
        .map_or_else(|| user.clone(), str::to_string);
    pgpass_find(&text, &host, &port, &db, &user)
}

fn pgpass_find(text: &str, host: &str, port: &str, db: &str, user: &str) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass(line);
        if fields.len() != 5 {
            continue;
        }
        let m = |pattern: &str, value: &str| pattern == "*" || pattern == value;
        if m(&fields[0], host) && m(&fields[1], port) && m(&fields[2], db) && m(&fields[3], user) {
            return Some(fields[4].clone());
        }
    }
    None
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().expect("never empty").push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("never empty").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpass_matching() {
        let text = "# comment\n\
                    db.internal:5432:ops:app:s3cret\n\
                    *:*:*:other:any\\:thing\n";
        assert_eq!(
            pgpass_find(text, "db.internal", "5432", "ops", "app").as_deref(),
            Some("s3cret")
        );
        assert_eq!(
            pgpass_find(text, "h", "1", "d", "other").as_deref(),
            Some("any:thing")
        );
        assert_eq!(pgpass_find(text, "db.internal", "5433", "ops", "app"), None);
    }
}
