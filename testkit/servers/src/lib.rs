//! Real HTTP and S3 servers for remote-cache tests.
//!
//! - [`Nginx`]: Debian `nginx` serving a WebDAV directory (`PUT`, `GET`, `HEAD`, `DELETE`, `MKCOL`, `COPY`, `MOVE`;
//!   the protocol of Bazel's HTTP cache) under `/cache/`, and the same behind HTTP basic authentication
//!   ([`PRIVATE_USER`] / [`PRIVATE_PASSWORD`]) under `/private/`. nginx's core DAV module has no `PROPFIND`, so
//!   listing is not available.
//! - [`Moto`]: the S3-compatible `moto_server` (PyPI `moto[server]`) with a bucket named [`BUCKET`]; it accepts
//!   any credentials without checking signatures, in region `us-east-1`. Unsigned requests may create buckets and
//!   write objects, but reading an object that is not `public-read` needs an `Authorization` header (any one, e.g.
//!   [`UNCHECKED_S3_AUTHORIZATION`]).
//!
//! Each server gets its own temporary directory under `/tmp` (configuration, logs, served files) and listens on a
//! free port of `127.0.0.1` only. `start` returns once the server process holds the listening socket and answers a
//! real HTTP request (polled, bounded by 30 s). Dropping the server stops it and removes the directory.
//!
//! Servers are spawned with `PR_SET_PDEATHSIG = SIGKILL` from a dedicated, never-ending thread, so they die with the
//! test process even when it panics or is killed, and a server kept in a `static` survives the end of the test
//! thread that started it. nginx runs as a single process (`master_process off`): a master killed by that signal
//! would leave its workers running and holding the port. Directories left by a killed test process are swept by
//! every start.
//!
//! [`nginx_or_skip`] and [`moto_or_skip`] skip a test (with a reason on stderr) where the server cannot be started,
//! and fail it when the environment variable `CI` is `true`. Set `AURORA_SERVERS_KEEP=1` to keep the directories.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use aurora_process_testkit::{forget_owner, keep_requested, spawn_tied, sweep_stale_dirs, tail, which, write_owner};

/// An `Authorization` header value that moto accepts as signed (it checks no signatures): moto answers unsigned
/// `GET`/`HEAD` of an object with 403 unless the object is `public-read`, but serves any request carrying this.
pub const UNCHECKED_S3_AUTHORIZATION: &str = "AWS4-HMAC-SHA256 \
    Credential=aurora/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00";
/// The bucket [`Moto::start`] creates.
pub const BUCKET: &str = "aurora";
/// User accepted by [`Nginx`]'s `/private/` location.
pub const PRIVATE_USER: &str = "aurora";
/// Password of [`PRIVATE_USER`].
pub const PRIVATE_PASSWORD: &str = "secret";

const DIR_PREFIX: &str = "aurora-servers-";
const TMP_ROOT: &str = "/tmp";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Connect, read and write timeout of [`http_request`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const START_ATTEMPTS: usize = 3;
const KEEP_ENV: &str = "AURORA_SERVERS_KEEP";
/// Path of nginx's readiness probe; it answers with the directory's name, so a foreign server that grabbed the port
/// is not mistaken for ours.
const NGINX_PROBE: &str = "/.aurora-ready";

/// Why a server could not be started.
pub use aurora_process_testkit::Unavailable;

/// An [`Unavailable`] naming what this kit starts.
fn unavailable(reason: impl Into<String>) -> Unavailable {
    Unavailable::new("test server", reason)
}

fn or_skip<T>(test: &str, started: Result<T, Unavailable>) -> Option<T> {
    match started {
        Ok(server) => Some(server),
        Err(e) => {
            aurora_process_testkit::skip_or_fail(test, e);
            None
        }
    }
}

/// Starts an [`Nginx`], or explains on stderr why `test` is skipped and returns `None`.
///
/// When the environment variable `CI` is `true` (or `1`) it panics instead: CI must provide nginx.
pub fn nginx_or_skip(test: &str) -> Option<Nginx> {
    or_skip(test, Nginx::start())
}

/// Starts a [`Moto`], or explains on stderr why `test` is skipped and returns `None`.
///
/// When the environment variable `CI` is `true` (or `1`) it panics instead: CI must provide `moto_server`.
pub fn moto_or_skip(test: &str) -> Option<Moto> {
    or_skip(test, Moto::start())
}

/// nginx serving WebDAV directories; see the crate documentation.
///
/// Dereferences to its [`Server`]: `addr()`, `dir()` (configuration, logs, served files), `pid()` and `logs()`
/// (nginx's output, error log and access log).
pub struct Nginx {
    server: Server,
}

impl Nginx {
    /// Starts nginx; returns once it answers HTTP (bounded by 30 s).
    pub fn start() -> Result<Nginx, Unavailable> {
        let bin = which("nginx").ok_or_else(|| unavailable("nginx not found (install the Debian package `nginx`)"))?;
        let server = start_with_retries(|| Self::try_start(&bin))?;
        Ok(Nginx { server })
    }

    fn try_start(bin: &Path) -> Result<Server, StartError> {
        Self::launch(bin, Server::new("nginx")?)
    }

    fn launch(bin: &Path, mut server: Server) -> Result<Server, StartError> {
        let root = server.root.clone();
        let token = token(&root);
        let conf = root.join("nginx.conf");
        let error_log = root.join("logs/error.log");
        let fail = |what: &str, e: io::Error| unavailable(format!("{what} in {}: {e}", root.display()));
        (|| {
            for sub in ["www/cache", "www/private", "logs", "tmp"] {
                fs::create_dir_all(root.join(sub))?;
            }
            fs::write(root.join("htpasswd"), format!("{PRIVATE_USER}:{{PLAIN}}{PRIVATE_PASSWORD}\n"))?;
            fs::write(&conf, nginx_conf(&root, server.port, &token))
        })()
        .map_err(|e| fail("preparing the nginx directory", e))?;

        let mut cmd = Command::new(bin);
        cmd.arg("-p").arg(&root).arg("-c").arg(&conf).arg("-e").arg(&error_log);
        let logs = vec![root.join("nginx.out"), error_log, root.join("logs/access.log")];
        server.spawn("nginx", cmd, logs)?;
        let probe = format!("{}{NGINX_PROBE}", server.base_url());
        server.wait_until(
            "nginx to answer",
            Duration::from_millis(20),
            || matches!(request(&probe, "GET", &[], &[], PROBE_TIMEOUT), Ok((200, body)) if body == token.as_bytes()),
        )?;
        // Catches a served directory nginx cannot read (autoindex answers 200 for a readable one).
        let cache = format!("{}/cache/", server.base_url());
        match http_request("GET", &cache, &[], &[]) {
            Ok((200, _)) => Ok(server),
            other => Err(unavailable(format!("GET {cache} answered {other:?}{}", server.logs())).into()),
        }
    }

    /// URL of a location, with a trailing slash: `url("cache")` is `http://127.0.0.1:PORT/cache/`, `url("private")`
    /// needs basic authentication. Leading and trailing slashes of `location` are ignored.
    pub fn url(&self, location: &str) -> String {
        let location = location.trim_matches('/');
        if location.is_empty() {
            format!("{}/", self.server.base_url())
        } else {
            format!("{}/{location}/", self.server.base_url())
        }
    }

    /// The served directory: `url("cache") + "a/b"` is the file `root().join("cache/a/b")`, so a test can read or
    /// corrupt stored objects directly.
    pub fn root(&self) -> PathBuf {
        self.server.root.join("www")
    }
}

impl Deref for Nginx {
    type Target = Server;

    fn deref(&self) -> &Server {
        &self.server
    }
}

impl fmt::Debug for Nginx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nginx").field("addr", &self.addr()).field("dir", &self.dir()).finish()
    }
}

fn nginx_conf(root: &Path, port: u16, token: &str) -> String {
    let r = root.display();
    // Single process: no `user` switch (workers would run as `nobody`, locked out of the 0700 directory), and
    // nothing survives the process SIGKILLed by PR_SET_PDEATHSIG.
    let dav = "dav_methods PUT DELETE MKCOL COPY MOVE;\n            \
               create_full_put_path on;\n            \
               dav_access user:rw group:r all:r;\n            \
               client_max_body_size 0;\n            \
               autoindex on;";
    format!(
        "# Generated by aurora-servers-testkit\n\
         daemon off;\n\
         master_process off;\n\
         pid {r}/nginx.pid;\n\
         lock_file {r}/nginx.lock;\n\
         error_log {r}/logs/error.log info;\n\
         events {{\n    worker_connections 256;\n}}\n\
         http {{\n    \
             default_type application/octet-stream;\n    \
             access_log {r}/logs/access.log;\n    \
             client_body_temp_path {r}/tmp/body;\n    \
             proxy_temp_path {r}/tmp/proxy;\n    \
             fastcgi_temp_path {r}/tmp/fastcgi;\n    \
             uwsgi_temp_path {r}/tmp/uwsgi;\n    \
             scgi_temp_path {r}/tmp/scgi;\n    \
             server {{\n        \
                 listen 127.0.0.1:{port};\n        \
                 server_name localhost;\n        \
                 root {r}/www;\n        \
                 location = {NGINX_PROBE} {{\n            \
                     access_log off;\n            \
                     return 200 \"{token}\";\n        \
                 }}\n        \
                 location /cache/ {{\n            \
                     {dav}\n        \
                 }}\n        \
                 location /private/ {{\n            \
                     {dav}\n            \
                     auth_basic \"aurora\";\n            \
                     auth_basic_user_file {r}/htpasswd;\n        \
                 }}\n    \
             }}\n\
         }}\n"
    )
}

/// `moto_server` with a bucket; see the crate documentation.
///
/// Dereferences to its [`Server`]: `addr()`, `dir()` (its output), `pid()` and `logs()` (`moto_server`'s output, one
/// line per request).
pub struct Moto {
    server: Server,
}

impl Moto {
    /// Starts `moto_server` and creates the bucket [`BUCKET`]; returns once both are done (bounded by 30 s).
    pub fn start() -> Result<Moto, Unavailable> {
        let program = moto_program()?;
        let server = start_with_retries(|| Self::try_start(&program))?;
        Ok(Moto { server })
    }

    fn try_start(program: &[PathBuf]) -> Result<Server, StartError> {
        Self::launch(program, Server::new("moto")?)
    }

    fn launch(program: &[PathBuf], mut server: Server) -> Result<Server, StartError> {
        let mut cmd = Command::new(&program[0]);
        cmd.args(&program[1..]).arg("-H").arg("127.0.0.1").arg("-p").arg(server.port.to_string());
        // Request logs reach the log file as they happen.
        cmd.env("PYTHONUNBUFFERED", "1");
        let out = server.root.join("moto.out");
        server.spawn("moto_server", cmd, vec![out])?;
        let base = server.base_url();
        server.wait_until("moto_server to answer", Duration::from_millis(50), || {
            matches!(request(&format!("{base}/"), "GET", &[], &[], PROBE_TIMEOUT),
                Ok((200, body)) if contains(&body, b"ListAllMyBucketsResult"))
        })?;
        let bucket = format!("{base}/{BUCKET}");
        match http_request("PUT", &bucket, &[], &[]) {
            Ok((200, _)) => Ok(server),
            other => Err(unavailable(format!("PUT {bucket} answered {other:?}{}", server.logs())).into()),
        }
    }

    /// S3 endpoint: `http://127.0.0.1:PORT` (path-style addressing: objects are at `endpoint/bucket/key`).
    pub fn endpoint(&self) -> String {
        self.server.base_url()
    }

    /// The bucket created at start: [`BUCKET`].
    pub fn bucket(&self) -> &'static str {
        BUCKET
    }
}

impl Deref for Moto {
    type Target = Server;

    fn deref(&self) -> &Server {
        &self.server
    }
}

impl fmt::Debug for Moto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Moto").field("endpoint", &self.endpoint()).field("dir", &self.dir()).finish()
    }
}

/// `moto_server` on `PATH`, else `python3 -m moto.server` where `python3` has moto (a `pip install --user` puts the
/// script in `~/.local/bin`, often not on `PATH`).
fn moto_program() -> Result<Vec<PathBuf>, Unavailable> {
    if let Some(bin) = which("moto_server") {
        return Ok(vec![bin]);
    }
    let missing = || unavailable("moto_server not found (python3 -m pip install 'moto[server]')");
    let python = which("python3").ok_or_else(missing)?;
    let mut probe = Command::new(&python);
    probe.args(["-c", "import moto.server, flask"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    if probe.status().is_ok_and(|s| s.success()) {
        Ok(vec![python, "-m".into(), "moto.server".into()])
    } else {
        Err(missing())
    }
}

enum StartError {
    /// The port picked as free was taken before the server bound it.
    PortRace(Unavailable),
    Fatal(Unavailable),
}

impl From<Unavailable> for StartError {
    fn from(e: Unavailable) -> Self {
        StartError::Fatal(e)
    }
}

fn start_with_retries(mut attempt: impl FnMut() -> Result<Server, StartError>) -> Result<Server, Unavailable> {
    // Removes directories left by test processes that died without dropping their servers (the servers themselves
    // died with them, through `PR_SET_PDEATHSIG`).
    sweep_stale_dirs(Path::new(TMP_ROOT), DIR_PREFIX);
    let mut tries = 1;
    loop {
        match attempt() {
            Ok(server) => return Ok(server),
            Err(StartError::PortRace(e)) if tries < START_ATTEMPTS => {
                eprintln!("aurora-servers-testkit: port race, retrying: {}", e.reason());
                tries += 1;
            }
            Err(StartError::PortRace(e) | StartError::Fatal(e)) => return Err(e),
        }
    }
}

/// One server process in its temporary directory, shared by [`Nginx`] and [`Moto`] (which dereference to it); stops
/// the process and removes the directory on drop.
pub struct Server {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    port: u16,
    process: Option<Process>,
}

struct Process {
    name: &'static str,
    child: Child,
    /// Files worth showing when it fails, best first.
    logs: Vec<PathBuf>,
}

impl Server {
    fn new(kind: &str) -> Result<Server, Unavailable> {
        let fail = |what: &str, e: io::Error| unavailable(format!("{what}: {e}"));
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{kind}-"))
            .tempdir_in(TMP_ROOT)
            .map_err(|e| fail(&format!("creating a temporary directory in {TMP_ROOT}"), e))?;
        let root = dir.path().to_path_buf();
        write_owner(&root).map_err(|e| fail("writing the owner file", e))?;
        let port = free_port().map_err(|e| fail("picking a free port", e))?;
        Ok(Server { dir: Some(dir), root, port, process: None })
    }

    /// Listening address (`127.0.0.1:PORT`).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The server's temporary directory (its configuration, logs and, for nginx, the served files; removed on drop).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Pid of the server process.
    pub fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, |p| p.child.id())
    }

    /// The last lines of the server's output and logs, for diagnostics in failing tests.
    pub fn logs(&self) -> String {
        self.process.as_ref().map(|p| p.logs.iter().map(|path| tail(path)).collect()).unwrap_or_default()
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Spawns the server from the spawner thread (see [`spawn_tied`]), output captured in `logs[0]`.
    fn spawn(&mut self, name: &'static str, mut cmd: Command, logs: Vec<PathBuf>) -> Result<(), Unavailable> {
        let out = &logs[0];
        let open = || File::create(out).map_err(|e| unavailable(format!("creating {}: {e}", out.display())));
        cmd.stdin(Stdio::null()).stdout(open()?).stderr(open()?).current_dir(&self.root);
        let child = spawn_tied(cmd).map_err(|e| unavailable(format!("spawning {name}: {e}")))?;
        self.process = Some(Process { name, child, logs });
        Ok(())
    }

    /// Polls `ready` every `every` until it holds; fails early when the server exits (a port race when its output
    /// says the address is in use), and after [`READY_TIMEOUT`].
    fn wait_until(&mut self, what: &str, every: Duration, mut ready: impl FnMut() -> bool) -> Result<(), StartError> {
        let start = Instant::now();
        loop {
            if let Some(p) = &mut self.process
                && let Ok(Some(status)) = p.child.try_wait()
            {
                let logs = self.logs();
                let name = self.process.as_ref().map_or("server", |p| p.name);
                let e = unavailable(format!("{name} exited ({status}) while waiting for {what}{logs}"));
                return Err(if logs.contains("in use") { StartError::PortRace(e) } else { StartError::Fatal(e) });
            }
            // The port check first: a server that lost the port race must not be taken for ready because the
            // winner answers.
            if self.listens() && ready() {
                return Ok(());
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err(StartError::Fatal(unavailable(format!(
                    "timed out after {READY_TIMEOUT:?} waiting for {what}{}\n(set {KEEP_ENV}=1 to keep {})",
                    self.logs(),
                    self.root.display()
                ))));
            }
            thread::sleep(every);
        }
    }

    /// Whether the server process holds the socket listening on `127.0.0.1:port` (matched by inode between
    /// `/proc/net/tcp` and the process's file descriptors).
    fn listens(&self) -> bool {
        let Some(p) = &self.process else { return false };
        let Ok(table) = fs::read_to_string("/proc/net/tcp") else { return false };
        let local = format!("0100007F:{:04X}", self.port);
        // Columns: sl local_address rem_address st ... inode (10th); st 0A is LISTEN.
        let Some(inode) = table.lines().skip(1).find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.len() > 9 && cols[1] == local && cols[3] == "0A").then(|| cols[9].to_owned())
        }) else {
            return false;
        };
        let socket = format!("socket:[{inode}]");
        let Ok(fds) = fs::read_dir(format!("/proc/{}/fd", p.child.id())) else { return false };
        fds.flatten().any(|fd| fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == socket.as_str()))
    }

    /// SIGTERM the server's process group, SIGKILL it after [`STOP_TIMEOUT`], reap the server.
    ///
    /// The group is signalled only while its leader (the server) is unreaped, so its id cannot have been reused.
    fn stop(&mut self) {
        let Some(mut p) = self.process.take() else { return };
        // The server leads its own process group (see `spawn_tied`); a wrapper's children are in it too.
        let group = -(p.child.id() as libc::pid_t);
        let signal = |p: &mut Process, signal| {
            if let Ok(None) = p.child.try_wait() {
                // SAFETY: kill has no memory-safety preconditions; the group's leader is our unreaped child.
                unsafe { libc::kill(group, signal) };
            }
        };
        signal(&mut p, libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while matches!(p.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        signal(&mut p, libc::SIGKILL);
        let _ = p.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = self.dir.take() {
            if keep_requested(KEEP_ENV) {
                forget_owner(&self.root); // not swept later
                eprintln!("aurora-servers-testkit: kept {}", dir.keep().display());
            } else if let Err(e) = dir.close() {
                eprintln!("aurora-servers-testkit: removing {}: {e}", self.root.display());
            }
        }
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`, `Content-Length`) and returns the status and body.
///
/// `url` is `http://host:port/path?query` (no TLS). `headers` are added as given, after `Host`, `Connection` and
/// `Content-Length` (each left out when `headers` has it). Chunked responses are decoded; a `HEAD` response has an
/// empty body. Connect, read and write time out after 10 s each.
pub fn http_request(method: &str, url: &str, body: &[u8], headers: &[(&str, &str)]) -> io::Result<(u16, Vec<u8>)> {
    request(url, method, body, headers, REQUEST_TIMEOUT)
}

fn request(
    url: &str,
    method: &str,
    body: &[u8],
    headers: &[(&str, &str)],
    timeout: Duration,
) -> io::Result<(u16, Vec<u8>)> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
    let rest = url.strip_prefix("http://").ok_or_else(|| invalid(format!("not an http:// URL: {url}")))?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| invalid(format!("bad host:port in {url}: {e}")))?
        .next()
        .ok_or_else(|| invalid(format!("{authority} resolves to nothing")))?;
    let is_token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && !b":/".contains(&b));
    if !is_token(method) {
        return Err(invalid(format!("bad method {method:?}")));
    }
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let defaults =
        [("Host", authority.to_owned()), ("Connection", "close".into()), ("Content-Length", body.len().to_string())];
    for (name, value) in defaults.iter().filter(|(name, _)| !has(name)) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    for (name, value) in headers {
        if !is_token(name) || value.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err(invalid(format!("bad header {name:?}: {value:?}")));
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");

    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let _ = stream.set_nodelay(true);
    // A server may answer early (401, 413) and close without reading the body: keep the answer over the error.
    let sent = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body)).and_then(|()| stream.flush());
    let mut response = Vec::new();
    let received = stream.read_to_end(&mut response);
    match parse_response(&response, method.eq_ignore_ascii_case("HEAD")) {
        Ok(answer) => Ok(answer),
        Err(e) => Err(sent.and(received).err().unwrap_or(e)),
    }
}

fn parse_response(response: &[u8], head_request: bool) -> io::Result<(u16, Vec<u8>)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("malformed HTTP response: {what}"));
    let mut rest = response;
    loop {
        let end = find(rest, b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
        let head = std::str::from_utf8(&rest[..end]).map_err(|_| bad("headers are not UTF-8"))?;
        let body = &rest[end + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .strip_prefix("HTTP/1.")
            .and_then(|s| s.get(2..5))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(&format!("status line {status_line:?}")))?;
        if (100..200).contains(&status) {
            rest = body; // interim response (100 Continue), the real one follows
            continue;
        }
        if head_request || status == 204 || status == 304 {
            return Ok((status, Vec::new()));
        }
        let header = |name: &str| {
            lines.clone().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
            })
        };
        if header("Transfer-Encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            return Ok((status, decode_chunked(body).ok_or_else(|| bad("chunked body"))?));
        }
        if let Some(len) = header("Content-Length") {
            let len: usize = len.parse().map_err(|_| bad("Content-Length"))?;
            if body.len() < len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("body truncated: {} of {len} bytes", body.len()),
                ));
            }
            return Ok((status, body[..len].to_vec()));
        }
        return Ok((status, body.to_vec()));
    }
}

fn decode_chunked(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(body, b"\r\n")?;
        let size_field = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_field.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size..)?.strip_prefix(b"\r\n")?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

/// A port that is free on 127.0.0.1 now; the server may lose it to another process before binding it, which
/// `start_with_retries` handles.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// A token unique to this server: its directory's name.
fn token(root: &Path) -> String {
    root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_chunked_head_and_interim_responses() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef";
        assert_eq!(parse_response(plain, false).unwrap(), (200, b"abc".to_vec()));
        let chunked = b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked, false).unwrap(), (201, b"abcde".to_vec()));
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
        assert_eq!(parse_response(head, true).unwrap(), (200, Vec::new()));
        let interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 404 Not Found\r\n\r\ngone";
        assert_eq!(parse_response(interim, false).unwrap(), (404, b"gone".to_vec()));
        let truncated = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        assert_eq!(parse_response(truncated, false).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", false).is_err());
    }

    #[test]
    fn rejects_bad_requests_before_connecting() {
        let err = |r: io::Result<(u16, Vec<u8>)>| r.unwrap_err().kind();
        assert_eq!(err(http_request("GET", "https://127.0.0.1:1/", &[], &[])), io::ErrorKind::InvalidInput);
        assert_eq!(err(http_request("GET", "http://127.0.0.1/", &[], &[])), io::ErrorKind::InvalidInput);
        assert_eq!(err(http_request("G T", "http://127.0.0.1:1/", &[], &[])), io::ErrorKind::InvalidInput);
        let injected = [("X-A", "b\r\nX-Evil: 1")];
        assert_eq!(err(http_request("GET", "http://127.0.0.1:1/", &[], &injected)), io::ErrorKind::InvalidInput);
    }

    /// Holds the port a server was given; the server must report a port race (retried), not a fatal error.
    fn assert_port_race(kind: &str, launch: impl FnOnce(Server) -> Result<Server, StartError>) {
        let server = Server::new(kind).unwrap();
        let _taken = TcpListener::bind((Ipv4Addr::LOCALHOST, server.port)).unwrap();
        match launch(server) {
            Ok(_) => panic!("{kind} started on a taken port"),
            Err(StartError::Fatal(e)) => panic!("{kind}: fatal instead of a port race: {e}"),
            Err(StartError::PortRace(e)) => assert!(e.reason().contains("in use"), "{}", e.reason()),
        }
    }

    #[test]
    fn a_taken_port_is_a_port_race() {
        if let Some(bin) = which("nginx") {
            assert_port_race("nginx", |server| Nginx::launch(&bin, server));
        }
        if let Ok(program) = moto_program() {
            assert_port_race("moto", |server| Moto::launch(&program, server));
        }
    }

    #[test]
    fn nginx_conf_keeps_everything_in_the_directory() {
        let conf = nginx_conf(Path::new("/tmp/aurora-servers-nginx-x"), 4242, "tok");
        assert!(conf.contains("listen 127.0.0.1:4242;"));
        assert!(conf.contains("return 200 \"tok\";"));
        for line in conf.lines().map(str::trim) {
            if line.starts_with('/') || line.contains(" /") && !line.starts_with("location") {
                assert!(line.contains("/tmp/aurora-servers-nginx-x"), "path outside the directory: {line}");
            }
        }
    }
}
