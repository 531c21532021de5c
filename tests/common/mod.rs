//! A local world for integration tests: moto's server as AWS and the
//! project's Jenkins emulator, each on a free loopback port, both killed when
//! the test ends; the AWS side built by `tests/support/moto_world.py`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const USER: &str = "slave-manager";
pub const ENVS: &str = "dev:111111111111:us-east-2,prod:222222222222:us-west-2";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed (and reaped) on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Moto {
    _child: Guard,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        // A port can be taken between the probe and moto's bind; retry.
        for _ in 0..5 {
            let port = free_port();
            // moto's server, with EC2's RunInstances fill (tests/support/moto_ec2.py).
            let child = Command::new("python3")
                .arg(repo().join("tests/support/moto_ec2.py"))
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("python3 tests/support/moto_ec2.py (run scripts/ensure-python-deps.sh)");
            let mut guard = Guard(child);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if ureq::get(&format!("http://127.0.0.1:{port}/moto-api/")).call().is_ok() {
                    return Moto { _child: guard, port };
                }
                if let Ok(Some(_)) = guard.0.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("moto's server did not start");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The fault-injecting proxy (tests/support/fault_proxy.py) in front of moto.
pub struct Proxy {
    _child: Guard,
    pub port: u16,
}

impl Proxy {
    pub fn start(target: &str) -> Proxy {
        let mut child = Command::new("python3")
            .arg(repo().join("tests/support/fault_proxy.py"))
            .args(["--target", target, "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 tests/support/fault_proxy.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().strip_prefix("READY port=").and_then(|p| p.parse().ok());
        let port = port.unwrap_or_else(|| panic!("proxy said {line:?}"));
        Proxy { _child: Guard(child), port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Replaces the fault rules.
    pub fn faults(&self, rules: Value) {
        ureq::post(&format!("{}/_proxy/faults", self.endpoint()))
            .content_type("application/json")
            .send(json!({ "rules": rules }).to_string())
            .expect("POST /_proxy/faults");
    }

    /// Replaces the latency model: `{"delays": [...], "buckets": [...],
    /// "max_count": [...]}` (tests/support/fault_proxy.py documents them).
    pub fn latency(&self, model: Value) {
        ureq::post(&format!("{}/_proxy/latency", self.endpoint()))
            .content_type("application/json")
            .send(model.to_string())
            .expect("POST /_proxy/latency");
    }

    /// The calls seen so far: (service, action, fault, throttled, time, end, …).
    pub fn calls(&self) -> Vec<Value> {
        let text = ureq::get(&format!("{}/_proxy/calls", self.endpoint()))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        serde_json::from_str::<Value>(&text).unwrap().as_array().unwrap().clone()
    }
}

/// A private CA and a certificate it signed for 127.0.0.1, made with openssl
/// in `dir` (rustls refuses a certificate for an IP address without an IP
/// subjectAltName).
pub struct Tls {
    /// The CA's certificate (PEM): what SSL_CERT_FILE points at.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Tls {
    pub fn make(dir: &Path) -> Tls {
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        // P-256 keys: made in milliseconds, read by rustls, Python and Java.
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let ca = ["-x509", "-days", "2", "-subj", "/CN=slave_manager test CA", "-keyout", "ca.key", "-out", "ca.pem"];
        let ca_ext = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"];
        openssl(&[&["req"][..], &ec, &ca, &ca_ext].concat());
        let csr = ["-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr"];
        openssl(&[&["req"][..], &ec, &csr].concat());
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ]);
        Tls { ca: dir.join("ca.pem"), cert: dir.join("server.pem"), key: dir.join("server.key") }
    }
}

pub struct Emulator {
    _child: Guard,
    pub http: u16,
    pub ssh: u16,
    /// `https` when started with a certificate.
    scheme: &'static str,
    /// For the control endpoints; trusts the test CA over https.
    control: ureq::Agent,
}

impl Emulator {
    /// Starts the emulator; `dir` holds `id_rsa.pub`, the key it accepts.
    pub fn start(dir: &Path) -> Emulator {
        Emulator::start_with(dir, None)
    }

    /// As `start`, serving its HTTP side over TLS with `tls`'s certificate.
    pub fn start_with(dir: &Path, tls: Option<&Tls>) -> Emulator {
        std::fs::copy(dir.join("id_rsa.pub"), dir.join("authorized_keys")).unwrap();
        let mut cmd = Command::new("python3");
        cmd.arg(repo().join("tests/support/jenkins_emulator.py"))
            .args(["--user", USER, "--authorized-keys"])
            .arg(dir.join("authorized_keys"))
            .args(["--http-port", "0", "--ssh-port", "0", "--log"])
            .arg(dir.join("commands.jsonl"));
        let mut control = ureq::Agent::config_builder();
        if let Some(tls) = tls {
            cmd.arg("--tls-cert").arg(&tls.cert).arg("--tls-key").arg(&tls.key);
            let pem = std::fs::read(&tls.ca).unwrap();
            let ca = ureq::tls::Certificate::from_pem(&pem).unwrap();
            let roots = ureq::tls::RootCerts::new_with_certs(&[ca]);
            control = control.tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build());
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 tests/support/jenkins_emulator.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = |key: &str| -> u16 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("emulator said {line:?}"))
        };
        Emulator {
            http: port("http="),
            ssh: port("ssh="),
            _child: Guard(child),
            scheme: if tls.is_some() { "https" } else { "http" },
            control: control.build().into(),
        }
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}/", self.scheme, self.http)
    }

    pub fn set_state(&self, state: &Value) {
        self.control
            .put(&format!("{}emulator/state", self.url()))
            .content_type("application/json")
            .send(state.to_string())
            .expect("PUT /emulator/state");
    }

    pub fn fault(&self, fault: &Value) {
        self.control
            .post(&format!("{}emulator/fault", self.url()))
            .content_type("application/json")
            .send(fault.to_string())
            .expect("POST /emulator/fault");
    }

    /// Which key the SSH side presents from now on: `"identity"` (Jenkins'
    /// own, published in X-Instance-Identity) or `"impostor"` (another key,
    /// as a man in the middle on the SSH path would present).
    pub fn serve_host_key(&self, which: &str) {
        self.control
            .post(&format!("{}emulator/host-key", self.url()))
            .content_type("application/json")
            .send(json!({ "serve": which }).to_string())
            .expect("POST /emulator/host-key");
    }

    /// HTTP requests (other than the control ones) as `METHOD PATH`, and SSH
    /// authentication attempts as `ssh-auth USER HOST_KEY`, oldest first.
    pub fn requests(&self) -> Vec<String> {
        self.control_json("emulator/requests")
            .as_array()
            .unwrap()
            .iter()
            .map(|e| match e["kind"].as_str() {
                Some("http") => format!("{} {}", s(&e["method"]), s(&e["path"])),
                _ => format!("ssh-auth {} {}", s(&e["user"]), s(&e["host_key"])),
            })
            .collect()
    }

    /// A JSON answer of the emulator's control side (`emulator/…`).
    fn control_json(&self, path: &str) -> Value {
        let text =
            self.control.get(&format!("{}{path}", self.url())).call().unwrap().body_mut().read_to_string().unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// The known_hosts line of Jenkins' SSH endpoint made from its
    /// X-Instance-Identity, the way docs/operating.md tells operators to make it
    /// (openssl and ssh-keygen): `[127.0.0.1]:PORT ssh-rsa AAAA…`.
    pub fn known_hosts_line(&self) -> String {
        let login = self.control.get(&format!("{}login", self.url())).call().unwrap();
        let identity = login.headers().get("X-Instance-Identity").expect("X-Instance-Identity").to_str().unwrap();
        let script = "echo \"$1\" | base64 -d | openssl pkey -pubin -inform DER > \"$2/identity.pem\" \
                      && ssh-keygen -i -m PKCS8 -f \"$2/identity.pem\"";
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("sh").args(["-c", script, "sh", identity]).arg(dir.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let key = String::from_utf8(out.stdout).unwrap();
        format!("[127.0.0.1]:{} {}", self.ssh, key.trim())
    }

    /// The commands received so far, as argv lists.
    pub fn commands(&self) -> Vec<Vec<String>> {
        self.control_json("emulator/log")
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["argv"].as_array().unwrap().iter().map(|w| w.as_str().unwrap().to_string()).collect())
            .collect()
    }
}

/// moto + emulator + a two-env world in two accounts, in a temp dir that is
/// also the manager's working directory.
pub struct World {
    pub dir: tempfile::TempDir,
    pub moto: Moto,
    pub jenkins: Emulator,
    pub world: Value,
    /// Set by `with_proxy`: the manager then talks to AWS through it.
    pub proxy: Option<Proxy>,
    /// Set by `with_tls`: Jenkins' certificate and its CA.
    pub tls: Option<Tls>,
}

impl World {
    /// `agents`: the moto_world.py `--agents` list (pre-existing agents).
    pub fn new(agents: Value) -> World {
        World::with_args(agents, &[])
    }

    /// As `new`, with more moto_world.py flags (e.g. `--sqs-region`).
    pub fn with_args(agents: Value, world_args: &[&str]) -> World {
        World::build(agents, world_args, false)
    }

    /// As `new`, Jenkins served over https with a certificate of a private
    /// CA (`tls/ca.pem` in the world's directory).
    pub fn with_tls(agents: Value) -> World {
        World::build(agents, &[], true)
    }

    fn build(agents: Value, world_args: &[&str], tls: bool) -> World {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(dir.path().join("id_rsa"))
            .status()
            .unwrap();
        assert!(status.success());
        let moto = Moto::start();
        let tls = tls.then(|| {
            std::fs::create_dir(dir.path().join("tls")).unwrap();
            Tls::make(&dir.path().join("tls"))
        });
        let jenkins = Emulator::start_with(dir.path(), tls.as_ref());
        std::fs::write(dir.path().join("agents.json"), agents.to_string()).unwrap();
        let out = Command::new("python3")
            .arg(repo().join("tests/support/moto_world.py"))
            .args(["--endpoint", &moto.endpoint(), "--envs", ENVS, "--jenkins-url", &jenkins.url()])
            .arg("--agents")
            .arg(dir.path().join("agents.json"))
            .arg("--environment-json")
            .arg(dir.path().join("environment.json"))
            .args(world_args)
            .output()
            .unwrap();
        assert!(out.status.success(), "moto_world.py: {}", String::from_utf8_lossy(&out.stderr));
        let world = serde_json::from_slice(&out.stdout).unwrap();
        World { dir, moto, jenkins, world, proxy: None, tls }
    }

    /// SDK configuration for the master's own account (moto's default
    /// credentials) in `region`.
    pub fn sdk(&self, region: &str) -> aws_config::SdkConfig {
        let endpoint = self.moto.endpoint();
        let region = aws_config::Region::new(region.to_string());
        block_on(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .endpoint_url(endpoint)
                .region(region)
                .credentials_provider(aws_credential_types::Credentials::new("testing", "testing", None, None, "test"))
                .load(),
        )
    }

    /// Puts the fault proxy between the manager and moto.
    pub fn with_proxy(mut self) -> World {
        self.proxy = Some(Proxy::start(&self.moto.endpoint()));
        self
    }

    pub fn proxy(&self) -> &Proxy {
        self.proxy.as_ref().expect("with_proxy")
    }

    /// Where the manager sends its AWS calls.
    pub fn aws_endpoint(&self) -> String {
        self.proxy.as_ref().map_or_else(|| self.moto.endpoint(), Proxy::endpoint)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn agent(&self, i: usize) -> &Value {
        &self.world["agents"][i]
    }

    pub fn ami_ids(&self) -> String {
        self.world["ami_ids"].as_str().unwrap().to_string()
    }

    /// The dump entry of a node for pre-existing agent `i`.
    pub fn node(&self, i: usize, offline: bool, terminate_me: bool, busy: u32) -> Value {
        let a = self.agent(i);
        let (env, ip, id, ami) = (s(&a["env"]), s(&a["private_ip"]), s(&a["instance_id"]), s(&a["image_id"]));
        json!({
            "slaveName": format!("{env}-{ip}"),
            "labels": format!("[{}, swarm]", s(&a["labels"])),
            "isOffLine": offline.to_string(),
            "description": format!("Created by Swarm InstanceID={id} AmiId={ami}"),
            "ami_id": ami,
            "ope_idle_count": if busy > 0 { "0" } else { "1" },
            "busy_executors": busy.to_string(),
            "num_executors": "1",
            "connectTime": "0",
            "idle_seconds": "3000",
            "terminate_me": terminate_me.to_string(),
        })
    }

    /// Runs the manager in the world's directory with the standard flags plus `extra`.
    pub fn run(&self, extra: &[&str]) -> Output {
        output(self.manager(extra))
    }

    /// The manager's command with the standard flags plus `extra`, not run.
    pub fn manager(&self, extra: &[&str]) -> Command {
        let mut cmd = self.command();
        cmd.args(["--url", &self.jenkins.url(), "--id_rsa", "id_rsa", "--jenkins_user", USER])
            .args(["--owner_email", "ops@example.com", "--ami_ids", &self.ami_ids(), "--pass_interval", "0"])
            .args(extra);
        cmd
    }

    /// The manager's command in the world's directory and environment, no flags.
    pub fn command(&self) -> Command {
        let mut path = std::env::var_os("PATH").unwrap_or_default();
        path =
            std::env::join_paths(std::iter::once(repo().join("tests/support/bin")).chain(std::env::split_paths(&path)))
                .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_slave_manager"));
        cmd.current_dir(self.path())
            .env("AWS_ENDPOINT_URL", self.aws_endpoint())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env_remove("JAVA_HOME")
            .env_remove("RUST_LOG")
            .env("PATH", path)
            .env_remove("JENKINS_USER")
            // Whom the manager (and the AWS SDK) trusts is a test's choice.
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .env("NO_COLOR", "1");
        cmd
    }

    /// Every instance of every env, and of the master's account (`(master)`).
    pub fn fleet(&self) -> Vec<Value> {
        let out = Command::new("python3")
            .arg(repo().join("tests/support/moto_world.py"))
            .args(["fleet", "--json", "--endpoint", &self.moto.endpoint(), "--environment"])
            .arg(self.path().join("environment.json"))
            .output()
            .unwrap();
        assert!(out.status.success(), "fleet: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
    }

    /// Every EBS volume of every env: `{env, volume, state, instances}`.
    pub fn volumes(&self) -> Vec<Value> {
        let out = Command::new("python3")
            .arg(repo().join("tests/support/moto_world.py"))
            .args(["volumes", "--endpoint", &self.moto.endpoint(), "--environment"])
            .arg(self.path().join("environment.json"))
            .output()
            .unwrap();
        assert!(out.status.success(), "volumes: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
    }

    /// Sends `messages` (`[{env, body}]`) to each env's queue `queue` (made
    /// in the env's account and region if missing); then the messages left
    /// on each, visible or in flight.
    pub fn events(&self, queue: &str, messages: Value) -> std::collections::BTreeMap<String, u64> {
        let file = self.path().join("events-to-send.json");
        std::fs::write(&file, messages.to_string()).unwrap();
        let out = Command::new("python3")
            .arg(repo().join("tests/support/moto_world.py"))
            .args(["events", "--endpoint", &self.moto.endpoint(), "--queue", queue, "--send"])
            .arg(&file)
            .arg("--environment")
            .arg(self.path().join("environment.json"))
            .output()
            .unwrap();
        assert!(out.status.success(), "events: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn instance(&self, id: &str) -> Value {
        self.fleet().into_iter().find(|r| r["instance"] == id).unwrap_or_else(|| panic!("no instance {id}"))
    }

    /// A CSV written by the manager, as key → value.
    pub fn csv(&self, name: &str) -> std::collections::BTreeMap<String, u64> {
        let text = std::fs::read_to_string(self.path().join(name)).unwrap();
        let mut lines = text.lines();
        let keys: Vec<&str> = lines.next().unwrap().split(',').collect();
        let values: Vec<u64> = lines.next().unwrap().split(',').map(|v| v.parse().unwrap()).collect();
        keys.into_iter().map(str::to_string).zip(values).collect()
    }
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// Runs `cmd`, echoing its output into the test's log.
pub fn output(mut cmd: Command) -> Output {
    let out = cmd.output().unwrap();
    eprintln!("--- manager stdout\n{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("--- manager stderr\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

pub fn s(v: &Value) -> String {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}")).to_string()
}

pub fn item(job: &str, label: &str, last_built_on: &str, parameters: &str) -> Value {
    json!({"jobName": job, "labels": label, "lastBuiltOn": last_built_on, "throttleEnabled": "false", "parameters": parameters})
}
