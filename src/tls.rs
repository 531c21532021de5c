//! Whom the binary trusts when it talks HTTPS to Jenkins (the jar download
//! and the SSH endpoint's discovery), and what `java` is told to trust for
//! the jar transport.
//!
//! The binary trusts the operating system's store, found and read as OpenSSL
//! does (`rustls-native-certs`): `SSL_CERT_FILE` and `SSL_CERT_DIR`, when
//! set, replace it. `--no_certificate_check` turns the check off.
//!
//! Java reads neither variable: it trusts its own `cacerts` (which Debian's
//! ca-certificates-java and RHEL's update-ca-trust regenerate from the system
//! store) or the store named by `-Djavax.net.ssl.trustStore`. And
//! `jenkins-cli.jar -ssh` reads the SSH endpoint from `URL/login` through
//! Java's default SSL context whatever `-noCertificateCheck` says (only its
//! `-http` and `-webSocket` modes apply that flag; `hudson.cli.SSHCLI`). So
//! when `SSL_CERT_FILE` or `SSL_CERT_DIR` is set, the same certificates are
//! written to a Java trust store and handed to `java`.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha1::{Digest, Sha1};
use ureq::tls::{Certificate, RootCerts, TlsConfig};

use crate::cli::CliTransport;
use crate::config::JenkinsConfig;

/// Whether the Jenkins URL's certificate is checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CertCheck {
    /// Against the system store, or `SSL_CERT_FILE`/`SSL_CERT_DIR`.
    #[default]
    Verify,
    /// `--no_certificate_check`: any certificate, any name.
    Skip,
}

/// The certificates the binary trusts, read once per process (the system
/// store is a few hundred kilobytes of PEM).
pub struct Roots {
    certs: Arc<Vec<Certificate<'static>>>,
    /// `SSL_CERT_FILE=…` and/or `SSL_CERT_DIR=…`, or "the system store".
    pub source: String,
    /// Chosen by the operator through `SSL_CERT_FILE`/`SSL_CERT_DIR`.
    pub from_env: bool,
    /// Files that could not be read or parsed.
    pub errors: Vec<String>,
}

impl Roots {
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }
}

pub fn roots() -> &'static Roots {
    static ROOTS: OnceLock<Roots> = OnceLock::new();
    ROOTS.get_or_init(|| {
        // The same reading of the variables as rustls-native-certs: set
        // means present, and then the system store is not read.
        let set: Vec<String> = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
            .into_iter()
            .filter_map(|name| std::env::var_os(name).map(|v| format!("{name}={}", v.to_string_lossy())))
            .collect();
        let found = rustls_native_certs::load_native_certs();
        let mut certs: Vec<Certificate<'static>> = Vec::new();
        for der in &found.certs {
            let cert = Certificate::from_der(der.as_ref()).to_owned();
            if !certs.iter().any(|c| c.der() == cert.der()) {
                certs.push(cert);
            }
        }
        Roots {
            certs: Arc::new(certs),
            source: if set.is_empty() { "the system store".to_string() } else { set.join(", ") },
            from_env: !set.is_empty(),
            errors: found.errors.iter().map(ToString::to_string).collect(),
        }
    })
}

/// An HTTP client for the Jenkins URL: answers of any status are returned,
/// not turned into errors; bounded by `timeout`.
pub fn agent(timeout: Duration, check: CertCheck) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .tls_config(tls_config(check))
        .build()
        .into()
}

fn tls_config(check: CertCheck) -> TlsConfig {
    if check == CertCheck::Skip {
        return TlsConfig::builder().disable_verification(true).build();
    }
    let roots = roots();
    if roots.is_empty() && !roots.from_env {
        // A machine without a CA bundle (a bare container): the Mozilla roots
        // built into ureq, which the binary used before it read the system.
        return TlsConfig::builder().root_certs(RootCerts::WebPki).build();
    }
    TlsConfig::builder().root_certs(RootCerts::Specific(Arc::clone(&roots.certs))).build()
}

/// Whether a request failed because the server's certificate was refused
/// (unknown issuer, wrong name, expired…), not for want of a connection.
pub fn is_certificate_error(err: &ureq::Error) -> bool {
    // rustls' verdict comes as ureq's own variant, or inside the io::Error of
    // a handshake that ran while the request was written or read.
    let rustls_error = match err {
        ureq::Error::Rustls(e) => Some(e),
        ureq::Error::Io(e) => e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    matches!(rustls_error, Some(rustls::Error::InvalidCertificate(_)))
}

/// Why a certificate was refused, in words for the operator.
pub fn refusal(err: &ureq::Error) -> String {
    let reason = err.to_string();
    // webpki's error reaches us only as text inside rustls' `Other`.
    if reason.contains("CaUsedAsEndEntity") {
        return format!(
            "{reason}: Jenkins' own certificate is a CA certificate, as a self-signed one made with \
             `openssl req -x509` is, which the manager never accepts as a server's, trusted or not; only \
             --no_certificate_check gets past it"
        );
    }
    // Refusals no trust store can cure: say so, or the operator installs CAs
    // in vain.
    if reason.contains("NotValidForName") {
        return format!(
            "{reason}: the certificate does not name the host of --url (give --url the name the certificate \
             carries in its subjectAltName; a name only in the CN is not accepted)"
        );
    }
    if reason.contains("Expired") || reason.contains("NotValidYet") {
        return format!("{reason}: the certificate is outside its validity period (renew it, or check the clock)");
    }
    reason
}

/// Whom the binary trusted, and what the operator can do about a refused
/// certificate.
pub fn certificate_fix() -> String {
    let roots = roots();
    let trusted = if roots.is_empty() && !roots.from_env {
        "trusted are the Mozilla roots built in (no system store was found)".to_string()
    } else {
        format!("trusted are the {} certificates of {}", roots.len(), roots.source)
    };
    let unreadable =
        if roots.errors.is_empty() { String::new() } else { format!(", unreadable: {}", roots.errors.join("; ")) };
    format!(
        "{trusted}{unreadable} — install the CA of Jenkins' certificate in the system store \
         (/usr/local/share/ca-certificates/ and update-ca-certificates, or update-ca-trust), or point \
         SSL_CERT_FILE at a bundle of the system's CAs plus it (cat /etc/ssl/certs/ca-certificates.crt \
         ca.pem > bundle.pem: it replaces the system store, for the AWS calls too, so a file with only \
         your CA breaks them), or pass --no_certificate_check"
    )
}

/// What the run's log says once at the start about certificates and the
/// channel to Jenkins.
pub fn startup_warnings(jenkins: &JenkinsConfig) -> Vec<String> {
    let https = jenkins.url.to_ascii_lowercase().starts_with("https://");
    let mut warnings = Vec::new();
    if !https && !crate::jenkins::cli::is_loopback(&jenkins.url) {
        let mut warning = format!(
            "--allow_insecure_http: {} is plain http to another host: anyone on the way can read and change what \
             Jenkins answers",
            jenkins.url
        );
        warning += &match &jenkins.known_hosts {
            Some(file) => format!("; Jenkins' SSH host key is pinned by {} only", file.path().display()),
            None => "; the X-Instance-Identity that Jenkins' SSH host key is checked against comes the same way: \
                     give --known_hosts FILE to pin it"
                .to_string(),
        };
        warnings.push(warning);
    }
    if jenkins.certificate_check == CertCheck::Skip {
        let mut warning = format!(
            "--no_certificate_check: the certificate of {} is not checked (anyone on the way can pose as Jenkins, \
             and serve the CLI jar that this run then executes)",
            jenkins.url
        );
        if https && jenkins.known_hosts.is_none() {
            warning += "; nor is the X-Instance-Identity that Jenkins' SSH host key is checked against: give \
                        --known_hosts FILE to pin it";
        }
        if jenkins.cli == CliTransport::Jar && https && !roots().from_env {
            warning += "; jenkins-cli.jar -ssh still checks it with Java's trust store when it reads the SSH \
                        endpoint from URL/login (it applies -noCertificateCheck only in its -http and -webSocket \
                        modes): point SSL_CERT_FILE at a bundle that holds the certificate or its CA (java is \
                        then given a trust store made from it), or use --cli ssh";
        }
        warnings.push(warning);
    }
    if https && roots().from_env && !roots().errors.is_empty() {
        warnings.push(format!("{}: {}", roots().source, roots().errors.join("; ")));
    }
    warnings
}

/// What to tell `java` so that `jenkins-cli.jar` trusts what the binary
/// trusts, for an `https` URL: the `-Djavax.net.ssl.*` options of a trust
/// store written in `dir` from `SSL_CERT_FILE`/`SSL_CERT_DIR`, or nothing
/// (Java's own `cacerts`) when neither is set. Errors say why no store could
/// be written; java then runs with its `cacerts`.
pub fn java_trust_options(url: &str, dir: &Path) -> Result<Vec<String>, String> {
    let roots = roots();
    if !url.to_ascii_lowercase().starts_with("https://") || !roots.from_env {
        return Ok(Vec::new());
    }
    if roots.is_empty() {
        let unreadable =
            if roots.errors.is_empty() { String::new() } else { format!(" ({})", roots.errors.join("; ")) };
        return Err(format!("{} holds no certificate{unreadable}", roots.source));
    }
    let store = dir.join(TRUST_STORE);
    // Written beside and renamed, so a java started meanwhile never reads
    // half a store and a link planted at its name is not written through.
    crate::files::replace(&store, &jks(&roots.certs, STORE_PASSWORD, SystemTime::now()))
        .map_err(|e| format!("{}: {e}", store.display()))?;
    tracing::info!(
        "java trusts the certificates of {} ({}; trust store {})",
        roots.source,
        roots.len(),
        store.display()
    );
    Ok(vec![
        format!("-Djavax.net.ssl.trustStore={}", store.display()),
        "-Djavax.net.ssl.trustStoreType=JKS".to_string(),
        // It holds public certificates only: the password merely lets Java
        // check the store's integrity.
        format!("-Djavax.net.ssl.trustStorePassword={STORE_PASSWORD}"),
    ])
}

const TRUST_STORE: &str = "jenkins-cli-truststore.jks";
const STORE_PASSWORD: &str = "changeit";

/// A Java KeyStore (JKS, what `sun.security.provider.JavaKeyStore` reads and
/// writes) holding `certs` as trusted-certificate entries. Written here
/// rather than with keytool, which imports one certificate per JVM start —
/// minutes for a CA bundle of a hundred and more; Java 17 reads JKS as it
/// did before PKCS12 became the default type.
pub fn jks(certs: &[Certificate<'static>], password: &str, now: SystemTime) -> Vec<u8> {
    let millis = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let mut out = Vec::new();
    out.extend_from_slice(&0xFEED_FEEDu32.to_be_bytes());
    out.extend_from_slice(&2u32.to_be_bytes()); // version 2: entries name their certificate type
    out.extend_from_slice(&(certs.len() as u32).to_be_bytes());
    for (i, cert) in certs.iter().enumerate() {
        out.extend_from_slice(&2u32.to_be_bytes()); // a trusted certificate entry
        java_utf(&mut out, &format!("ca-{i}"));
        out.extend_from_slice(&millis.to_be_bytes());
        java_utf(&mut out, "X.509");
        out.extend_from_slice(&(cert.der().len() as u32).to_be_bytes());
        out.extend_from_slice(cert.der());
    }
    // The integrity check: SHA-1 over the password's UTF-16BE bytes, the
    // "Mighty Aphrodite" salt and everything before it.
    let mut digest = Sha1::new();
    for unit in password.encode_utf16() {
        digest.update(unit.to_be_bytes());
    }
    digest.update(b"Mighty Aphrodite");
    digest.update(&out);
    out.extend_from_slice(&digest.finalize());
    out
}

/// `DataOutputStream.writeUTF` for the ASCII names used here: a 16-bit
/// length, then the bytes.
fn java_utf(out: &mut Vec<u8>, text: &str) {
    debug_assert!(text.is_ascii() && text.len() < 0x10000);
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout Java reads (tests/tls.rs has a real JVM read it): magic,
    /// version 2, count, one trusted-certificate entry per certificate, and
    /// a 20-byte SHA-1 that depends on the password.
    #[test]
    fn jks_holds_each_certificate_as_a_trusted_entry() {
        let certs = [Certificate::from_der(b"first").to_owned(), Certificate::from_der(b"second!").to_owned()];
        let at = UNIX_EPOCH + Duration::from_millis(0x0102_0304_0506);
        let store = jks(&certs, "changeit", at);
        assert_eq!(&store[..12], &[0xFE, 0xED, 0xFE, 0xED, 0, 0, 0, 2, 0, 0, 0, 2]);
        let first = [
            &[0, 0, 0, 2][..],
            &[0, 4],
            b"ca-0",
            &[0, 0, 1, 2, 3, 4, 5, 6],
            &[0, 5],
            b"X.509",
            &[0, 0, 0, 5],
            b"first",
        ]
        .concat();
        assert_eq!(&store[12..12 + first.len()], &first[..]);
        let entries = 2 * (4 + 2 + 4 + 8 + 2 + 5 + 4) + 5 + 7;
        assert_eq!(store.len(), 12 + entries + 20);
        let other = jks(&certs, "other", at);
        assert_eq!(store[..store.len() - 20], other[..other.len() - 20]);
        assert_ne!(store[store.len() - 20..], other[other.len() - 20..]);
    }
}
