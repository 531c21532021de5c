//! The Jenkins CLI over SSH (SPEC A11), in two transports: the official jar
//! run by `java`, or the same protocol spoken natively through libssh2.
//! Every call is bounded by a timeout; words are passed as argv to `java` and
//! quoted for Jenkins' tokenizer over SSH, never through a shell. Jenkins' SSH
//! host key is checked before anything is sent (see `host_key`): natively
//! after the handshake, and by the jar itself (`-strictHostKey`) against a
//! known_hosts file the manager writes for it.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wait_timeout::ChildExt;

use super::host_key::{self, HostKey, Identity, KnownHostsFile, Pins};
use super::quote::command_line;
use crate::cli::CliTransport;
use crate::tls::{self, CertCheck};

/// The default cap on what one command may print, on stdout and on stderr
/// each (`--max_cli_output_mb`): a dump of tens of MB means huge queued
/// parameters, not a queue to plan from.
pub const DEFAULT_OUTPUT_LIMIT: u64 = 64 << 20;

/// While the jar runs, how often its output is checked against the cap.
const OUTPUT_POLL: Duration = Duration::from_millis(50);

/// What a CLI command printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot read the SSH endpoint of {url}: {reason}")]
    Discovery { url: String, reason: String },
    #[error("{url}: the certificate is not trusted ({reason}); {fix}", fix = tls::certificate_fix())]
    Certificate { url: String, reason: String },
    /// `jenkins-cli.jar -ssh` could not read `URL/login`. Java swallows the
    /// cause (`URLConnection.getHeaderField` ignores the IOException of a
    /// failed handshake), so over https this is mostly Java refusing the
    /// certificate that the binary itself could verify.
    #[error(
        "`{command}`: {stderr} — java could not read the SSH endpoint from URL/login: Jenkins is down or \
         unreachable, or Java does not trust its certificate (jenkins-cli.jar -ssh asks URL/login with \
         Java's own trust store and ignores -noCertificateCheck there; Java hides which). For the \
         certificate: install its CA in the system store (Debian's and RHEL's Java follow it) or import it \
         into Java's cacerts (keytool -importcert -cacerts), or point SSL_CERT_FILE at a bundle of the \
         system's CAs plus yours (it replaces the system store, for the AWS calls too; java is then given a \
         trust store made from it), or use --cli ssh"
    )]
    JarTls { command: String, stderr: String },
    #[error("cannot fetch {url}: {reason}")]
    JarDownload { url: String, reason: String },
    /// `sent`: the command had been sent when it failed (it may have run).
    #[error("ssh {endpoint}: {reason}")]
    Ssh { endpoint: String, reason: String, sent: bool },
    /// The SSH server is not the Jenkins the manager holds it to be: its host
    /// key is not the pinned one, or nothing pins it.
    #[error("ssh {endpoint}: refused: {reason}")]
    HostKey { endpoint: String, reason: String },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` timed out after {seconds} s")]
    Timeout { command: String, seconds: u64 },
    /// args4j, which parses CLI arguments on the master, replaces a word
    /// `@FILE` with the lines of FILE on Jenkins before 2.442 / LTS 2.426.3.
    #[error("`{command}`: the word {word:?} starts with @, which an unpatched Jenkins reads as a file to expand (CVE-2024-23897); not sent")]
    AtFile { command: String, word: String },
    #[error(
        "`{command}` printed more than {mib} MiB (--max_cli_output_mb); it was stopped and its output dropped",
        mib = limit >> 20
    )]
    TooMuchOutput { command: String, limit: u64 },
    #[error("`{command}` exited with status {status}: {stderr}")]
    Failed { command: String, status: i32, stderr: String },
    /// The blocking task that ran the command panicked.
    #[error("CLI task failed: {0}")]
    Task(String),
}

impl crate::world::Jenkins for JenkinsCli {
    fn run(&self, words: &[String], stdin: &[u8]) -> Result<CliOutput, CliError> {
        JenkinsCli::run(self, words, stdin)
    }
}

/// What a CLI failure means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CliErrorKind {
    /// Jenkins did not answer: down, unreachable, slow past the timeout,
    /// the key not accepted, or no way to run the CLI at all.
    Unreachable,
    /// Refused on our side: the certificate or host key is not the one
    /// trusted, or a word would not be sent safely.
    Refused,
    /// The command ran and exited non-zero.
    Failed,
    /// The command printed more than may be read.
    BadOutput,
}

impl CliError {
    pub fn kind(&self) -> CliErrorKind {
        match self {
            CliError::Discovery { .. }
            | CliError::JarTls { .. }
            | CliError::JarDownload { .. }
            | CliError::Ssh { .. }
            | CliError::Spawn { .. }
            | CliError::Timeout { .. }
            | CliError::Task(_) => CliErrorKind::Unreachable,
            CliError::Certificate { .. } | CliError::HostKey { .. } | CliError::AtFile { .. } => CliErrorKind::Refused,
            CliError::Failed { .. } => CliErrorKind::Failed,
            CliError::TooMuchOutput { .. } => CliErrorKind::BadOutput,
        }
    }
}

impl CliError {
    /// Jenkins could not be reached, so the command never ran: trying it
    /// again later cannot run it twice. A timeout, a failed command or one
    /// cut off after it was sent may have run; a refused word never will.
    pub fn never_sent(&self) -> bool {
        match self {
            CliError::Discovery { .. }
            | CliError::Certificate { .. }
            | CliError::JarTls { .. }
            | CliError::JarDownload { .. }
            | CliError::HostKey { .. }
            | CliError::Spawn { .. } => true,
            CliError::Ssh { sent, .. } => !sent,
            CliError::AtFile { .. }
            | CliError::Timeout { .. }
            | CliError::TooMuchOutput { .. }
            | CliError::Failed { .. }
            | CliError::Task(_) => false,
        }
    }
}

/// A Jenkins CLI bound to one master, user and key.
pub struct JenkinsCli {
    url: String,
    user: String,
    key: PathBuf,
    timeout: Duration,
    cert_check: CertCheck,
    /// Bytes of stdout (and of stderr) read per command at most.
    output_limit: u64,
    /// `--known_hosts`: what Jenkins' SSH host key must be, besides (or
    /// instead of) its X-Instance-Identity.
    known_hosts: Option<KnownHostsFile>,
    transport: Transport,
}

enum Transport {
    /// The jar is fetched on first use, and again after a failed fetch, so a
    /// master that was down when the run began does not end the run — unless
    /// it is on disk already (`--cli_jar`).
    Jar { java: PathBuf, jar: PathBuf, download: bool, workdir: PathBuf, state: Mutex<JarState> },
    /// The endpoint and identity are discovered once and forgotten after a
    /// connection failure or a refused host key, so a master that moved its
    /// SSH port is found again.
    Ssh { found: Mutex<Option<Discovery>> },
}

#[derive(Default)]
struct JarState {
    fetched: bool,
    /// `-Djavax.net.ssl.*` options for `java`, decided once per run.
    java_options: Option<Vec<String>>,
    /// The `user.home` given to java, whose `.ssh/known_hosts` pins Jenkins'
    /// host key, with the endpoint and what pins it; made again after a
    /// refusal.
    pinned: Option<JavaPin>,
}

#[derive(Clone)]
struct JavaPin {
    home: PathBuf,
    endpoint: String,
    source: String,
}

/// What `URL/login` tells about Jenkins' SSH server.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// `host:port`.
    pub endpoint: String,
    /// From `X-Instance-Identity`, or why there is none.
    pub identity: Result<Identity, String>,
}

/// Where java's `user.home` is made, in the working directory.
pub const JAVA_HOME_DIR: &str = "jenkins-cli-home";

impl JenkinsCli {
    /// Prepares the transport. For `jar`, `URL/jnlpJars/jenkins-cli.jar` will
    /// be fetched into `workdir` by the first command of the run.
    pub fn new(kind: CliTransport, url: &str, user: &str, key: &Path, workdir: &Path, timeout: Duration) -> JenkinsCli {
        let transport = match kind {
            CliTransport::Ssh => Transport::Ssh { found: Mutex::new(None) },
            CliTransport::Jar => Transport::Jar {
                java: java_program(),
                jar: workdir.join("jenkins-cli.jar"),
                download: true,
                workdir: workdir.to_path_buf(),
                state: Mutex::new(JarState::default()),
            },
        };
        JenkinsCli {
            url: url.to_string(),
            user: user.to_string(),
            key: key.to_path_buf(),
            timeout,
            cert_check: CertCheck::Verify,
            output_limit: DEFAULT_OUTPUT_LIMIT,
            known_hosts: None,
            transport,
        }
    }

    /// The most a command may print on stdout, and on stderr, in bytes;
    /// beyond it the command is stopped and fails with `TooMuchOutput`.
    pub fn output_limit(mut self, bytes: u64) -> JenkinsCli {
        self.output_limit = bytes;
        self
    }

    /// Holds Jenkins' SSH host key to this file as well as to its
    /// X-Instance-Identity (or instead of it, when Jenkins sends none).
    pub fn known_hosts(mut self, file: Option<KnownHostsFile>) -> JenkinsCli {
        self.known_hosts = file;
        self
    }

    /// Runs this jar (`--cli_jar`) instead of downloading one; `--cli jar` only.
    pub fn cli_jar(mut self, path: Option<PathBuf>) -> JenkinsCli {
        if let (Transport::Jar { jar, download, .. }, Some(path)) = (&mut self.transport, path) {
            *jar = path;
            *download = false;
        }
        self
    }

    /// Whether the Jenkins URL's certificate is checked (by default it is).
    /// `Skip` also passes `-noCertificateCheck` to the jar.
    pub fn certificate_check(mut self, check: CertCheck) -> JenkinsCli {
        self.cert_check = check;
        self
    }

    /// Runs one CLI command (`words`), `stdin` written to it and closed.
    /// A non-zero exit is an error carrying the command's stderr.
    pub fn run(&self, words: &[String], stdin: &[u8]) -> Result<CliOutput, CliError> {
        if let Some(word) = words.iter().find(|w| w.starts_with('@')) {
            return Err(CliError::AtFile {
                command: words.first().cloned().unwrap_or_default(),
                word: word.chars().take(200).collect(),
            });
        }
        let out = match &self.transport {
            Transport::Jar { java, jar, download, workdir, state } => {
                let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
                if *download && !state.fetched {
                    download_jar(&self.url, jar, self.timeout, self.cert_check)?;
                    state.fetched = true;
                }
                let options = state
                    .java_options
                    .get_or_insert_with(|| {
                        tls::java_trust_options(&self.url, workdir).unwrap_or_else(|e| {
                            tracing::warn!("no trust store for java ({e}): it trusts its own cacerts");
                            Vec::new()
                        })
                    })
                    .clone();
                let pin = match &state.pinned {
                    Some(pin) => pin.clone(),
                    None => {
                        let pin = self.pin_for_java(workdir)?;
                        state.pinned = Some(pin.clone());
                        pin
                    }
                };
                drop(state);
                let out = self.run_jar(java, &options, &pin.home, jar, words, stdin)?;
                if out.status == 255 && refused_host_key(&out.stderr) {
                    // Discovered and written again next time: Jenkins may have
                    // moved its SSH port.
                    if let Transport::Jar { state, .. } = &self.transport {
                        state.lock().unwrap_or_else(|p| p.into_inner()).pinned = None;
                    }
                    let said = out.stderr.lines().rev().find(|l| l.contains("WARNING")).unwrap_or("").trim();
                    return Err(CliError::HostKey {
                        endpoint: pin.endpoint,
                        reason: format!(
                            "jenkins-cli.jar -strictHostKey refused the host key, which is not {}: someone on the \
                             way may be posing as Jenkins; nothing was sent (java said: {said})",
                            pin.source
                        ),
                    });
                }
                // CLI.main's answer to a NotTalkingToJenkinsException.
                if out.status == 3
                    && out.stderr.contains("There's no Jenkins running at")
                    && self.url.to_ascii_lowercase().starts_with("https://")
                {
                    return Err(CliError::JarTls {
                        command: words.first().cloned().unwrap_or_default(),
                        stderr: out.stderr.trim().lines().last().unwrap_or("").to_string(),
                    });
                }
                out
            }
            Transport::Ssh { found } => {
                let discovery = {
                    let mut cached = found.lock().unwrap_or_else(|p| p.into_inner());
                    match cached.as_ref() {
                        Some(d) => d.clone(),
                        None => {
                            let d = discover(&self.url, self.timeout, self.cert_check)?;
                            *cached = Some(d.clone());
                            d
                        }
                    }
                };
                let result = self.run_ssh(&discovery, words, stdin);
                if matches!(result, Err(CliError::Ssh { .. } | CliError::HostKey { .. })) {
                    *found.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                result?
            }
        };
        if out.status != 0 {
            return Err(CliError::Failed {
                command: words.first().cloned().unwrap_or_default(),
                status: out.status,
                stderr: out.stderr.trim().lines().last().unwrap_or("").to_string(),
            });
        }
        Ok(out)
    }

    /// What pins Jenkins' host key for the jar: `URL/login` read, and the
    /// pinned key written to `<workdir>/jenkins-cli-home/.ssh/known_hosts`
    /// (the jar reads `${user.home}/.ssh/known_hosts`, nothing else).
    fn pin_for_java(&self, workdir: &Path) -> Result<JavaPin, CliError> {
        let discovery = discover(&self.url, self.timeout, self.cert_check)?;
        let refused = |reason: String| CliError::HostKey { endpoint: discovery.endpoint.clone(), reason };
        let name = host_key::endpoint_name(&discovery.endpoint)
            .ok_or_else(|| refused(format!("X-SSH-Endpoint {:?} is not host:port", discovery.endpoint)))?;
        let pins = Pins { identity: &discovery.identity, known_hosts: self.known_hosts.as_ref() };
        let text = pins.for_java(&name).map_err(refused)?;
        let home = workdir.join(JAVA_HOME_DIR);
        write_private(&home, &text).map_err(|e| refused(format!("cannot write java's known_hosts: {e}")))?;
        Ok(JavaPin { home, endpoint: discovery.endpoint.clone(), source: pins.source() })
    }

    fn run_jar(
        &self,
        java: &Path,
        options: &[String],
        home: &Path,
        jar: &Path,
        words: &[String],
        stdin: &[u8],
    ) -> Result<CliOutput, CliError> {
        // For parity with the original; jenkins-cli.jar applies it only in
        // its -http and -webSocket modes, not to -ssh's endpoint discovery.
        let no_check: &[&str] = if self.cert_check == CertCheck::Skip { &["-noCertificateCheck"] } else { &[] };
        let mut child = Command::new(java)
            .args(options)
            .arg(format!("-Duser.home={}", home.display()))
            .arg("-jar")
            .arg(jar)
            .args(["-s", &self.url])
            .args(no_check)
            // Refuse a host key that the known_hosts in `home` does not list.
            .arg("-strictHostKey")
            .args(["-ssh", "-user", &self.user, "-i"])
            .arg(&self.key)
            .args(words)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| CliError::Spawn { program: java.display().to_string(), source })?;
        // Pipes are drained on their own threads so a chatty command cannot
        // block on a full pipe while we wait for it; past the cap they keep
        // draining (discarding) until the child is killed.
        let mut input = child.stdin.take().expect("stdin piped");
        let stdin = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&stdin);
        });
        let overflow = Arc::new(AtomicBool::new(false));
        let stdout = drain(child.stdout.take().expect("stdout piped"), self.output_limit, Arc::clone(&overflow));
        let stderr = drain(child.stderr.take().expect("stderr piped"), self.output_limit, Arc::clone(&overflow));
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match child.wait_timeout(left.min(OUTPUT_POLL)) {
                Ok(Some(status)) => break status,
                Ok(None) if overflow.load(Ordering::Relaxed) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(self.too_much_output(words));
                }
                Ok(None) if !left.is_zero() => {}
                Ok(None) | Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(self.timeout_error(words));
                }
            }
        };
        let _ = writer.join();
        let (stdout, stderr) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
        if overflow.load(Ordering::Relaxed) {
            return Err(self.too_much_output(words));
        }
        Ok(CliOutput { status: status.code().unwrap_or(-1), stdout, stderr })
    }

    /// An SSH session with Jenkins whose host key passed the pins, not yet
    /// authenticated; what vouched for the key; and a handle on the socket to
    /// cut it when the output passes the cap.
    fn connect(&self, discovery: &Discovery) -> Result<(ssh2::Session, String, TcpStream), CliError> {
        let endpoint = &discovery.endpoint;
        let ssh_err = |reason: String| CliError::Ssh { endpoint: endpoint.to_string(), reason, sent: false };
        let addr = endpoint
            .to_socket_addrs()
            .map_err(|e| ssh_err(e.to_string()))?
            .next()
            .ok_or_else(|| ssh_err("no address".into()))?;
        let tcp = TcpStream::connect_timeout(&addr, self.timeout).map_err(|e| ssh_err(e.to_string()))?;
        // Kept to cut the connection when the output passes the cap, so no
        // polite close waits on a server still sending.
        let hang_up = tcp.try_clone().map_err(|e| ssh_err(e.to_string()))?;
        // SSH writes small packets back to back; without this each exchange
        // waits out a delayed ACK (~40 ms, three times per command).
        tcp.set_nodelay(true).map_err(|e| ssh_err(e.to_string()))?;
        let mut session = ssh2::Session::new().map_err(|e| ssh_err(e.to_string()))?;
        session.set_tcp_stream(tcp);
        session.set_timeout(self.timeout.as_millis().min(u32::MAX as u128) as u32);
        session.handshake().map_err(|e| ssh_err(format!("handshake: {e}")))?;
        let refused = |reason: String| CliError::HostKey { endpoint: endpoint.to_string(), reason };
        let presented = session.host_key().map(|(blob, _)| HostKey::from_blob(blob));
        let presented = presented.ok_or_else(|| refused("the server showed no host key".into()))?;
        let name = host_key::endpoint_name(endpoint)
            .ok_or_else(|| refused(format!("X-SSH-Endpoint {endpoint:?} is not host:port")))?;
        let pins = Pins { identity: &discovery.identity, known_hosts: self.known_hosts.as_ref() };
        let vouched = pins.verify(&name, &presented).map_err(refused)?;
        Ok((session, vouched, hang_up))
    }

    /// Connects to Jenkins' SSH server and checks its host key, sending
    /// nothing (`check`): what vouched for the key.
    pub fn check_host_key(&self) -> Result<String, CliError> {
        let discovery = discover(&self.url, self.timeout, self.cert_check)?;
        let (_, vouched, _) = self.connect(&discovery)?;
        let caveat = match &discovery.identity {
            Ok(identity) if !identity.authenticated && self.known_hosts.is_none() => {
                " — but read over a channel anyone on the way can change (plain http to another host, or https \
                 without the certificate check): give --known_hosts to pin it"
            }
            _ => "",
        };
        Ok(format!("{vouched}{caveat}"))
    }

    fn run_ssh(&self, discovery: &Discovery, words: &[String], stdin: &[u8]) -> Result<CliOutput, CliError> {
        let endpoint = &discovery.endpoint;
        let ssh_err = |reason: String| CliError::Ssh { endpoint: endpoint.to_string(), reason, sent: true };
        let not_sent = |reason: String| CliError::Ssh { endpoint: endpoint.to_string(), reason, sent: false };
        let deadline = Instant::now() + self.timeout;
        let (session, _, hang_up) = self.connect(discovery)?;
        session
            .userauth_pubkey_file(&self.user, None, &self.key, None)
            .map_err(|e| not_sent(format!("authentication as {} failed: {e}", self.user)))?;
        let timed_out = |e: ssh2::Error| {
            if Instant::now() >= deadline || e.code() == ssh2::ErrorCode::Session(-9) {
                self.timeout_error(words)
            } else {
                ssh_err(e.to_string())
            }
        };
        let mut channel = session.channel_session().map_err(|e| match timed_out(e) {
            CliError::Ssh { endpoint, reason, .. } => CliError::Ssh { endpoint, reason, sent: false },
            other => other,
        })?;
        channel.exec(&command_line(words)).map_err(timed_out)?;
        channel.write_all(stdin).map_err(|e| ssh_err(format!("writing stdin: {e}")))?;
        channel.send_eof().map_err(timed_out)?;
        let limit = self.output_limit;
        // libssh2's timeout bounds each wait, not the command: a server that
        // trickles output would reset it forever. The deadline bounds it.
        let read_until = |stream: &mut dyn Read, out: &mut Vec<u8>| -> Result<(), CliError> {
            let mut buf = [0u8; 64 * 1024];
            while out.len() as u64 <= limit {
                if Instant::now() >= deadline {
                    return Err(self.timeout_error(words));
                }
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) => return Err(io_timeout(e, self, words, &ssh_err)),
                }
            }
            Ok(())
        };
        // A failed or oversized read leaves the connection cut, so no polite
        // close waits on a server still sending.
        let cut = |e: CliError| {
            let _ = hang_up.shutdown(std::net::Shutdown::Both);
            e
        };
        let mut stdout = Vec::new();
        read_until(&mut channel, &mut stdout).map_err(cut)?;
        let mut stderr = Vec::new();
        if stdout.len() as u64 <= limit {
            read_until(&mut channel.stderr(), &mut stderr).map_err(cut)?;
        }
        if stdout.len() as u64 > limit || stderr.len() as u64 > limit {
            return Err(cut(self.too_much_output(words)));
        }
        channel.wait_close().map_err(timed_out)?;
        let status = channel.exit_status().map_err(timed_out)?;
        Ok(CliOutput {
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    fn too_much_output(&self, words: &[String]) -> CliError {
        CliError::TooMuchOutput { command: words.first().cloned().unwrap_or_default(), limit: self.output_limit }
    }

    fn timeout_error(&self, words: &[String]) -> CliError {
        CliError::Timeout { command: words.first().cloned().unwrap_or_default(), seconds: self.timeout.as_secs() }
    }
}

fn io_timeout(e: std::io::Error, cli: &JenkinsCli, words: &[String], ssh_err: &dyn Fn(String) -> CliError) -> CliError {
    if e.kind() == std::io::ErrorKind::TimedOut {
        cli.timeout_error(words)
    } else {
        ssh_err(e.to_string())
    }
}

/// Reads `r` to its end on a thread, keeping at most `limit` bytes; more
/// sets `overflow` and is read and dropped, so the writer never blocks.
fn drain<R: Read + Send + 'static>(mut r: R, limit: u64, overflow: Arc<AtomicBool>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut r).take(limit).read_to_end(&mut buf);
        let mut sink = [0u8; 64 * 1024];
        loop {
            match r.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => overflow.store(true, Ordering::Relaxed),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// `$JAVA_HOME/bin/java` when set, else `java` from PATH.
fn java_program() -> PathBuf {
    match std::env::var_os("JAVA_HOME") {
        Some(home) if !home.is_empty() => Path::new(&home).join("bin").join("java"),
        _ => PathBuf::from("java"),
    }
}

/// Jenkins names its SSH endpoint in an `X-SSH-Endpoint: host:port` header,
/// added by the sshd plugin's page decorator to pages drawn with the layout
/// and to the login page. Anonymous users usually lack Overall/Read, and then
/// the root answers 403 without it; the login page is always readable, which
/// is why the official client (`hudson.cli.SSHCLI`) asks `URL/login`.
pub fn discover_endpoint(url: &str, timeout: Duration, check: CertCheck) -> Result<String, CliError> {
    discover(url, timeout, check).map(|d| d.endpoint)
}

/// `URL/login`'s `X-SSH-Endpoint` and `X-Instance-Identity` (the
/// instance-identity module's page decorator adds the latter to the same
/// pages as the former).
pub fn discover(url: &str, timeout: Duration, check: CertCheck) -> Result<Discovery, CliError> {
    let login = format!("{}/login", url.trim_end_matches('/'));
    let err = |reason: String| CliError::Discovery { url: login.clone(), reason };
    let resp = tls::agent(timeout, check).get(&login).call().map_err(|e| no_answer(&login, e, err))?;
    let header = resp.headers().get("X-SSH-Endpoint").ok_or_else(|| {
        err(format!("HTTP {} without an X-SSH-Endpoint header (is SSHD enabled in Jenkins?)", resp.status()))
    })?;
    let endpoint = header.to_str().map_err(|e| err(e.to_string()))?.trim().to_string();
    // A master behind a wildcard bind may answer with an empty host.
    let endpoint = match endpoint.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => {
            if host.is_empty() {
                let url_host = url_host(url).ok_or_else(|| err("cannot tell the host".into()))?;
                format!("{url_host}:{port}")
            } else {
                endpoint
            }
        }
        _ => return Err(err(format!("X-SSH-Endpoint {endpoint:?} is not host:port"))),
    };
    let identity = match resp.headers().get("X-Instance-Identity").map(|h| h.to_str()) {
        None => Err(format!("{login} has no X-Instance-Identity header")),
        Some(Err(e)) => Err(format!("X-Instance-Identity of {login}: {e}")),
        Some(Ok(text)) => HostKey::from_identity(text)
            .map(|key| Identity { key, from: login.clone(), authenticated: is_authenticated(url, check) })
            .map_err(|e| format!("X-Instance-Identity of {login} is {e}")),
    };
    Ok(Discovery { endpoint, identity })
}

/// Whether what `url` answers can be believed: https with the certificate
/// checked, or any scheme to this machine.
pub fn is_authenticated(url: &str, check: CertCheck) -> bool {
    (url.to_ascii_lowercase().starts_with("https://") && check == CertCheck::Verify) || is_loopback(url)
}

/// Whether `url` names this machine: `localhost`, 127.0.0.0/8 or `[::1]`.
/// Other names are not resolved: a name is only as good as the resolver.
pub fn is_loopback(url: &str) -> bool {
    let Some(host) = url_host(url) else { return false };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host of a URL, without port or user.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// A request to `url` that got no answer: a refused certificate is told
/// apart, as its fix differs from that of an unreachable master.
fn no_answer(url: &str, e: ureq::Error, other: impl FnOnce(String) -> CliError) -> CliError {
    if tls::is_certificate_error(&e) {
        CliError::Certificate { url: url.to_string(), reason: tls::refusal(&e) }
    } else {
        other(e.to_string())
    }
}

/// What jenkins-cli.jar prints when its host key verifier refuses the
/// server: SSHCLI's "Unknown host key for …", mina-sshd's "mismatched keys
/// presented by …", then the SshException of `checkKeys` (status 255).
fn refused_host_key(stderr: &str) -> bool {
    ["Server key did not validate", "Unknown host key for", "mismatched keys presented"]
        .iter()
        .any(|sign| stderr.contains(sign))
}

/// Writes `text` as `home/.ssh/known_hosts`, the directories 0700 and the
/// file 0600, written beside and renamed (a java started meanwhile never
/// reads half a file). A symlink in their place is replaced, not followed.
fn write_private(home: &Path, text: &str) -> std::io::Result<()> {
    let ssh = home.join(".ssh");
    for dir in [home, ssh.as_path()] {
        match std::fs::symlink_metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                std::fs::remove_file(dir)?;
                private_dir(dir)?;
            }
            Err(_) => private_dir(dir)?,
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    let file = ssh.join("known_hosts");
    let part = ssh.join("known_hosts.part");
    let _ = std::fs::remove_file(&part);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(&part)?.write_all(text.as_bytes())?;
    std::fs::rename(&part, &file)
}

fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn download_jar(url: &str, dest: &Path, timeout: Duration, check: CertCheck) -> Result<(), CliError> {
    let jar_url = format!("{}/jnlpJars/jenkins-cli.jar", url.trim_end_matches('/'));
    let err = |reason: String| CliError::JarDownload { url: jar_url.clone(), reason };
    let mut resp = tls::agent(timeout, check).get(&jar_url).call().map_err(|e| no_answer(&jar_url, e, err))?;
    if !resp.status().is_success() {
        return Err(err(format!("HTTP {}", resp.status())));
    }
    let bytes = resp.body_mut().with_config().limit(64 * 1024 * 1024).read_to_vec().map_err(|e| err(e.to_string()))?;
    // Written beside and renamed, so a concurrent reader never sees half a
    // jar and a link planted in the workspace is replaced, not written through.
    crate::files::replace(dest, &bytes).map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_host_is_read_from_urls() {
        assert_eq!(url_host("https://jenkins.example.com/").as_deref(), Some("jenkins.example.com"));
        assert_eq!(url_host("http://127.0.0.1:8080/jenkins").as_deref(), Some("127.0.0.1"));
        assert_eq!(url_host("http://u:p@host:1/").as_deref(), Some("host"));
    }

    #[test]
    fn no_word_starting_with_an_at_sign_is_sent() {
        // Nothing listens on port 9: a word that got through would end in a
        // discovery error instead.
        for kind in [CliTransport::Ssh, CliTransport::Jar] {
            let dir = tempfile::tempdir().unwrap();
            let cli =
                JenkinsCli::new(kind, "http://127.0.0.1:9/", "u", Path::new("k"), dir.path(), Duration::from_secs(1));
            let words = ["build".to_string(), "job".to_string(), "-p".to_string(), "@/etc/passwd".to_string()];
            let err = cli.run(&words, b"").unwrap_err();
            let err = err.to_string();
            assert!(err.contains("\"@/etc/passwd\"") && err.contains("CVE-2024-23897"), "{err}");
        }
    }

    #[test]
    fn only_this_machine_is_loopback() {
        for url in [
            "http://127.0.0.1:8080/",
            "http://localhost/",
            "http://LOCALHOST:80",
            "http://127.1.2.3/",
            "http://[::1]:8080/",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "http://jenkins.example.com/",
            "http://10.0.0.1/",
            "http://localhost.example.com/",
            "http://[::2]/",
            "http://",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
        assert!(is_authenticated("https://jenkins.example.com/", CertCheck::Verify));
        assert!(!is_authenticated("https://jenkins.example.com/", CertCheck::Skip));
        assert!(!is_authenticated("http://jenkins.example.com/", CertCheck::Verify));
        assert!(is_authenticated("http://127.0.0.1:8080/", CertCheck::Skip));
    }

    #[test]
    fn the_jars_refusal_of_a_host_key_is_recognised() {
        assert!(refused_host_key("WARNING: Unknown host key for /127.0.0.1:2222\norg.apache.sshd.common.SshException: Server key did not validate"));
        assert!(!refused_host_key("ERROR: No such command foo"));
    }
}
