//! Jenkins' SSH host key, and how the manager knows it is Jenkins'.
//!
//! Jenkins' sshd module serves the instance identity as its SSH host key (the
//! RSA key pair of the instance-identity module: `SSHD.start` installs a key
//! pair provider returning `InstanceIdentity`'s keys), and the module's page
//! decorator puts the public half in an `X-Instance-Identity` header on every
//! page drawn with Jenkins' layout and on `/login` — the page the CLI reads
//! `X-SSH-Endpoint` from: base64, on one line, of the key's X.509
//! SubjectPublicKeyInfo DER (`RSAPublicKey.getEncoded()`).
//!
//! So the key the SSH server presents is checked against that header, and/or
//! against an OpenSSH known_hosts file (`--known_hosts`). The header is proof
//! only when it came over an authenticated channel: https with the
//! certificate checked, or a connection to this machine.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use sha2::{Digest, Sha256};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A public key in the SSH wire format (`string algorithm, …`), as a server
/// presents it and as known_hosts lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    blob: Vec<u8>,
}

impl HostKey {
    pub fn from_blob(blob: &[u8]) -> HostKey {
        HostKey { blob: blob.to_vec() }
    }

    /// The key of an `X-Instance-Identity` header: base64 of an RSA
    /// SubjectPublicKeyInfo, turned into `ssh-rsa` wire format.
    pub fn from_identity(header: &str) -> Result<HostKey, String> {
        let der = B64.decode(header.trim()).map_err(|e| format!("not base64: {e}"))?;
        let (n, e) = rsa_public_key(&der).ok_or("not an RSA SubjectPublicKeyInfo")?;
        let mut blob = Vec::new();
        put_string(&mut blob, b"ssh-rsa");
        put_mpint(&mut blob, e);
        put_mpint(&mut blob, n);
        Ok(HostKey { blob })
    }

    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// `ssh-rsa`, `ssh-ed25519`…: the wire format's first string.
    pub fn algorithm(&self) -> String {
        let len = self.blob.get(..4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
        self.blob.get(4..4 + len).map_or_else(|| "?".to_string(), |a| String::from_utf8_lossy(a).into_owned())
    }

    /// OpenSSH's fingerprint (`ssh-keygen -l`): `SHA256:` and the unpadded
    /// base64 of the blob's SHA-256.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(&self.blob);
        format!("SHA256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest))
    }

    /// `ssh-rsa SHA256:…`, for messages.
    pub fn describe(&self) -> String {
        format!("{} {}", self.algorithm(), self.fingerprint())
    }

    /// The line known_hosts holds for this key at `name`.
    pub fn known_hosts_line(&self, name: &str) -> String {
        format!("{name} {} {}", self.algorithm(), B64.encode(&self.blob))
    }
}

/// OpenSSH's name for an endpoint in known_hosts: `host` on port 22,
/// `[host]:port` on any other (hashed entries hash that same text).
pub fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// `host:port` (as X-SSH-Endpoint has it) → the known_hosts name.
pub fn endpoint_name(endpoint: &str) -> Option<String> {
    let (host, port) = endpoint.rsplit_once(':')?;
    Some(known_hosts_name(host, port.parse().ok()?))
}

/// Jenkins' instance identity as read from a page's header.
#[derive(Debug, Clone)]
pub struct Identity {
    pub key: HostKey,
    /// The page it was read from (`URL/login`).
    pub from: String,
    /// Read over https with the certificate checked, or from this machine.
    pub authenticated: bool,
}

/// An OpenSSH known_hosts file (`--known_hosts`), read at start.
#[derive(Debug, Clone)]
pub struct KnownHostsFile {
    path: PathBuf,
    /// The lines libssh2 reads (comments and blank lines left out).
    lines: Vec<String>,
    /// Lines left out: markers (`@cert-authority`, `@revoked`) and lines
    /// libssh2 cannot read.
    pub skipped: usize,
}

/// What a known_hosts file says of a key at a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    /// The key is listed for the name.
    Yes,
    /// The name is listed, with other keys only.
    OtherKey,
    /// The name is not listed.
    NoEntry,
}

impl KnownHostsFile {
    /// Reads and checks the file: every line must be a known_hosts line, at
    /// least one libssh2 can use, and the file must not be writable by others
    /// (the rule jenkins-cli.jar applies to its own known_hosts).
    pub fn read(path: &Path) -> Result<KnownHostsFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(|e| e.to_string())?.permissions().mode();
            if mode & 0o022 != 0 {
                return Err(format!(
                    "others may write it (mode {:o}), so anyone could change the pin: chmod go-w it",
                    mode & 0o777
                ));
            }
        }
        let session = ssh2::Session::new().map_err(|e| e.to_string())?;
        let mut lines = Vec::new();
        let mut skipped = 0;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            // libssh2 knows no `@cert-authority`/`@revoked` markers: it would
            // take the marker for a host name.
            if line.starts_with('@') {
                skipped += 1;
                continue;
            }
            let mut probe = session.known_hosts().map_err(|e| e.to_string())?;
            match probe.read_str(line, ssh2::KnownHostFileKind::OpenSSH) {
                Ok(()) => lines.push(line.to_string()),
                Err(_) => skipped += 1,
            }
        }
        if lines.is_empty() {
            return Err(
                "no host key in it (OpenSSH known_hosts lines such as `[jenkins.example.com]:22222 ssh-rsa AAAA…`)"
                    .to_string(),
            );
        }
        Ok(KnownHostsFile { path: path.to_path_buf(), lines, skipped })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `key` is listed for `name` (`[host]:port` or `host`), with
    /// OpenSSH's meaning: `host` alone is port 22 only.
    pub fn lists(&self, name: &str, key: &HostKey) -> Result<Listed, String> {
        let session = ssh2::Session::new().map_err(|e| e.to_string())?;
        let mut hosts = session.known_hosts().map_err(|e| e.to_string())?;
        for line in &self.lines {
            hosts.read_str(line, ssh2::KnownHostFileKind::OpenSSH).map_err(|e| e.to_string())?;
        }
        // Without a port libssh2 compares the name as given; with one it
        // would also accept a plain `host` entry, which OpenSSH keeps for 22.
        match hosts.check(name, key.blob()) {
            ssh2::CheckResult::Match => Ok(Listed::Yes),
            ssh2::CheckResult::Mismatch => Ok(Listed::OtherKey),
            ssh2::CheckResult::NotFound => Ok(Listed::NoEntry),
            ssh2::CheckResult::Failure => Err(format!("libssh2 could not check {name}")),
        }
    }

    /// The file's usable lines, for a copy.
    pub fn text(&self) -> String {
        self.lines.iter().fold(String::new(), |mut out, l| {
            let _ = writeln!(out, "{l}");
            out
        })
    }
}

/// What the manager holds Jenkins' SSH host key against.
pub struct Pins<'a> {
    /// From `X-Instance-Identity`, or why there is none.
    pub identity: &'a Result<Identity, String>,
    pub known_hosts: Option<&'a KnownHostsFile>,
}

impl Pins<'_> {
    /// Checks `presented`, the key the server at `name` showed. `Ok` says
    /// what vouched for it; `Err` why it is refused.
    pub fn verify(&self, name: &str, presented: &HostKey) -> Result<String, String> {
        let mut vouched = Vec::new();
        if let Some(file) = self.known_hosts {
            match file.lists(name, presented)? {
                Listed::Yes => vouched.push(format!("listed for {name} in {}", file.path().display())),
                Listed::OtherKey => {
                    return Err(format!(
                        "the host key ({}) is not the one {} lists for {name}: someone on the way may be posing as \
                         Jenkins (or Jenkins' identity changed: then update the file); nothing was sent",
                        presented.describe(),
                        file.path().display()
                    ))
                }
                Listed::NoEntry => {
                    return Err(format!(
                        "{} lists no host key for {name}, where Jenkins' SSH server is (add the line made from \
                         Jenkins' X-Instance-Identity, see docs/operating.md); nothing was sent",
                        file.path().display()
                    ))
                }
            }
        }
        match self.identity {
            Ok(identity) if identity.key == *presented => {
                vouched.push(format!("Jenkins' instance identity (X-Instance-Identity of {})", identity.from))
            }
            Ok(identity) => {
                return Err(format!(
                    "the host key ({}) is not Jenkins' instance identity ({}, X-Instance-Identity of {}): someone on \
                     the way may be posing as Jenkins; nothing was sent",
                    presented.describe(),
                    identity.key.describe(),
                    identity.from
                ))
            }
            Err(why) if vouched.is_empty() => {
                return Err(format!(
                    "{why}, and no --known_hosts was given: Jenkins' SSH host key cannot be checked; nothing was sent"
                ))
            }
            Err(_) => {}
        }
        Ok(format!("{} is {}", presented.describe(), vouched.join(" and ")))
    }

    /// The known_hosts text `java -jar jenkins-cli.jar -strictHostKey` is
    /// given for the endpoint `name`: the identity's line (once the
    /// known_hosts file, if any, agrees with it), else the file's lines.
    pub fn for_java(&self, name: &str) -> Result<String, String> {
        match (self.identity, self.known_hosts) {
            (Ok(identity), file) => {
                if let Some(file) = file {
                    match file.lists(name, &identity.key)? {
                        Listed::Yes => {}
                        Listed::OtherKey => {
                            return Err(format!(
                                "Jenkins' instance identity ({}, X-Instance-Identity of {}) is not the key {} lists \
                                 for {name}: someone on the way may be posing as Jenkins (or Jenkins' identity \
                                 changed: then update the file); nothing was run",
                                identity.key.describe(),
                                identity.from,
                                file.path().display()
                            ))
                        }
                        Listed::NoEntry => {
                            return Err(format!(
                                "{} lists no host key for {name}, where Jenkins' SSH server is (add the line made \
                                 from Jenkins' X-Instance-Identity, see docs/operating.md); nothing was run",
                                file.path().display()
                            ))
                        }
                    }
                }
                Ok(identity.key.known_hosts_line(name) + "\n")
            }
            (Err(_), Some(file)) => Ok(file.text()),
            (Err(why), None) => Err(format!(
                "{why}, and no --known_hosts was given: Jenkins' SSH host key cannot be checked; nothing was run"
            )),
        }
    }

    /// What pins the key, for messages: the header, the file, or both.
    pub fn source(&self) -> String {
        let mut sources = Vec::new();
        if let Ok(identity) = self.identity {
            sources.push(format!("Jenkins' instance identity (X-Instance-Identity of {})", identity.from));
        }
        if let Some(file) = self.known_hosts {
            sources.push(format!("the key {} lists", file.path().display()));
        }
        sources.join(" and ")
    }
}

/// (n, e) of an RSA SubjectPublicKeyInfo: SEQUENCE { SEQUENCE { OID
/// rsaEncryption, NULL }, BIT STRING { SEQUENCE { INTEGER n, INTEGER e } } }.
fn rsa_public_key(der: &[u8]) -> Option<(&[u8], &[u8])> {
    const RSA_ENCRYPTION: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
    let (spki, rest) = der_item(der, 0x30)?;
    if !rest.is_empty() {
        return None;
    }
    let (algorithm, rest) = der_item(spki, 0x30)?;
    let (oid, _) = der_item(algorithm, 0x06)?;
    if oid != RSA_ENCRYPTION {
        return None;
    }
    let (bits, _) = der_item(rest, 0x03)?;
    let (&unused, bits) = bits.split_first()?;
    if unused != 0 {
        return None;
    }
    let (key, _) = der_item(bits, 0x30)?;
    let (n, rest) = der_item(key, 0x02)?;
    let (e, _) = der_item(rest, 0x02)?;
    Some((n, e))
}

/// One DER item of tag `tag`: (its content, what follows it).
fn der_item(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7F);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        rest = &rest[count..];
        len
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

fn put_string(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

/// An SSH mpint of a positive DER INTEGER: no leading zero bytes but one
/// when the top bit is set.
fn put_mpint(out: &mut Vec<u8>, int: &[u8]) {
    let start = int.iter().position(|b| *b != 0).unwrap_or(int.len());
    let digits = &int[start..];
    if digits.first().is_some_and(|b| b & 0x80 != 0) {
        out.extend_from_slice(&((digits.len() + 1) as u32).to_be_bytes());
        out.push(0);
        out.extend_from_slice(digits);
    } else {
        put_string(out, digits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The emulator's identity header and the `ssh-keyscan` line of the same
    /// server (made once with the emulator and OpenSSH).
    const IDENTITY: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAo7X2FAKM1CZovUGo9IaTjl4lEwOG0boTB9/VSqQM2AN1dmVnDq1QzL/VwxVgoCrIlVwXs315T/TSge5a3JpD6YORZnZqLjEa3cHLtpYTXkv2/YfKPChpyBsL8zzuseSrWrCpGhGWZfdTEXE34giyMu1mCzP+7x5ZrMBze+p9fi/A1OdZxrXcY/KMG2rb1hpe7DucSgxdfOX/Iei4+x2JCsdGxluhEewqJQvf4DuUTgJ84m+BxqBDo5GShaRecxsxLpJtsgMKTHk34/Y4COP6HsLGhlZ+oiXHO68iXETMyxFb6fwTS0Jq0yAT3u+TdxnaVeXj4hd/VVKNSC6pxgp1xQIDAQAB";
    const KEYSCAN: &str = "AAAAB3NzaC1yc2EAAAADAQABAAABAQCjtfYUAozUJmi9Qaj0hpOOXiUTA4bRuhMH39VKpAzYA3V2ZWcOrVDMv9XDFWCgKsiVXBezfXlP9NKB7lrcmkPpg5FmdmouMRrdwcu2lhNeS/b9h8o8KGnIGwvzPO6x5KtasKkaEZZl91MRcTfiCLIy7WYLM/7vHlmswHN76n1+L8DU51nGtdxj8owbatvWGl7sO5xKDF185f8h6Lj7HYkKx0bGW6ER7ColC9/gO5ROAnzib4HGoEOjkZKFpF5zGzEukm2yAwpMeTfj9jgI4/oewsaGVn6iJcc7ryJcRMzLEVvp/BNLQmrTIBPe75N3GdpV5ePiF39VUo1ILqnGCnXF";

    #[test]
    fn the_identity_header_is_the_ssh_host_key() {
        let key = HostKey::from_identity(IDENTITY).unwrap();
        assert_eq!(key.blob(), B64.decode(KEYSCAN).unwrap());
        assert_eq!(key.algorithm(), "ssh-rsa");
        assert_eq!(key.known_hosts_line("[127.0.0.1]:34033"), format!("[127.0.0.1]:34033 ssh-rsa {KEYSCAN}"));
        assert!(key.fingerprint().starts_with("SHA256:") && !key.fingerprint().ends_with('='));
        for bad in ["", "%%%", "MAA=", &IDENTITY[..100]] {
            assert!(HostKey::from_identity(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn known_hosts_names_follow_openssh() {
        assert_eq!(known_hosts_name("jenkins.example.com", 22), "jenkins.example.com");
        assert_eq!(endpoint_name("127.0.0.1:22222").as_deref(), Some("[127.0.0.1]:22222"));
        assert_eq!(endpoint_name("no-port"), None);
    }

    #[test]
    fn a_known_hosts_file_lists_keys_by_name_and_port() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let key = HostKey::from_identity(IDENTITY).unwrap();
        let other =
            HostKey::from_blob(&[&[0, 0, 0, 7][..], b"ssh-rsa", &[0, 0, 0, 1, 3, 0, 0, 0, 2, 0, 0xC5]].concat());
        let text = format!(
            "# comment\n\n{}\n{}\n@cert-authority *.example.com ssh-rsa {KEYSCAN}\n",
            key.known_hosts_line("[127.0.0.1]:2222"),
            other.known_hosts_line("jenkins.example.com")
        );
        std::fs::write(&path, &text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let file = KnownHostsFile::read(&path).unwrap();
        assert_eq!((file.lines.len(), file.skipped), (2, 1));
        assert_eq!(file.lists("[127.0.0.1]:2222", &key), Ok(Listed::Yes));
        assert_eq!(file.lists("[127.0.0.1]:2222", &other), Ok(Listed::OtherKey));
        assert_eq!(file.lists("[127.0.0.1]:2223", &key), Ok(Listed::NoEntry));
        // `host` alone is port 22: it says nothing of another port.
        assert_eq!(file.lists("[jenkins.example.com]:2222", &key), Ok(Listed::NoEntry));
        assert_eq!(file.lists("jenkins.example.com", &key), Ok(Listed::OtherKey));

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
            assert!(KnownHostsFile::read(&path).unwrap_err().contains("chmod go-w"));
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(KnownHostsFile::read(&path).unwrap_err().contains("no host key"));
    }

    #[test]
    fn pins_refuse_any_other_key() {
        let key = HostKey::from_identity(IDENTITY).unwrap();
        let other = HostKey::from_blob(b"\0\0\0\x0bssh-ed25519\0\0\0\x01x");
        let identity = Ok(Identity { key: key.clone(), from: "https://j/login".into(), authenticated: true });
        let pins = Pins { identity: &identity, known_hosts: None };
        assert!(pins.verify("[j]:2222", &key).unwrap().contains("instance identity"));
        let refused = pins.verify("[j]:2222", &other).unwrap_err();
        assert!(refused.contains("not Jenkins' instance identity") && refused.contains("ssh-ed25519"), "{refused}");
        assert_eq!(pins.for_java("[j]:2222").unwrap(), key.known_hosts_line("[j]:2222") + "\n");

        let none = Err("https://j/login has no X-Instance-Identity header".to_string());
        let pins = Pins { identity: &none, known_hosts: None };
        assert!(pins.verify("[j]:2222", &key).unwrap_err().contains("no --known_hosts"));
        assert!(pins.for_java("[j]:2222").is_err());
    }
}
