//! Tests against real nginx and moto_server; skipped (or, with `CI=true`, failed) where they are not installed.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use aurora_servers_testkit::{
    PRIVATE_PASSWORD, PRIVATE_USER, UNCHECKED_S3_AUTHORIZATION, http_request, moto_or_skip, nginx_or_skip,
};

/// Binary content that survives no accidental text handling: every byte value, more than one TCP segment.
fn payload() -> Vec<u8> {
    (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= chunk.len() { ALPHABET[(n >> shift) as usize & 63] as char } else { '=' });
        }
    }
    out
}

fn assert_stopped(addr: SocketAddr, dir: &Path) {
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(), "{addr} still accepts connections");
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
fn base64_matches_rfc_4648_vectors() {
    let cases = [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")];
    for (plain, encoded) in cases {
        assert_eq!(base64(plain.as_bytes()), encoded);
    }
    assert_eq!(base64(b"aurora:secret"), "YXVyb3JhOnNlY3JldA==");
}

#[test]
fn nginx_stores_and_serves_objects_under_cache() {
    let Some(nginx) = nginx_or_skip("nginx_stores_and_serves_objects_under_cache") else { return };
    let url = format!("{}ac/12/34abcd", nginx.url("cache"));
    let body = payload();
    let (status, _) = http_request("PUT", &url, &body, &[]).unwrap();
    assert_eq!(status, 201, "PUT {url}{}", nginx.logs());
    let (status, got) = http_request("GET", &url, &[], &[]).unwrap();
    assert_eq!(status, 200, "{}", nginx.logs());
    assert!(got == body, "GET returned {} bytes that differ from the {} PUT", got.len(), body.len());

    assert_eq!(http_request("HEAD", &url, &[], &[]).unwrap(), (200, Vec::new()));
    let missing = format!("{}ac/12/missing", nginx.url("cache"));
    assert_eq!(http_request("HEAD", &missing, &[], &[]).unwrap().0, 404);
    assert_eq!(http_request("GET", &missing, &[], &[]).unwrap().0, 404);

    // Overwrite, then corrupt on disk: root() is where the objects live.
    assert_eq!(http_request("PUT", &url, b"second", &[]).unwrap().0, 204);
    let file = nginx.root().join("cache/ac/12/34abcd");
    assert_eq!(std::fs::read(&file).unwrap(), b"second");
    std::fs::write(&file, b"corrupt").unwrap();
    assert_eq!(http_request("GET", &url, &[], &[]).unwrap(), (200, b"corrupt".to_vec()));

    assert_eq!(http_request("DELETE", &url, &[], &[]).unwrap().0, 204);
    assert_eq!(http_request("GET", &url, &[], &[]).unwrap().0, 404);
    assert!(!file.exists());
}

#[test]
fn nginx_private_requires_basic_auth() {
    let Some(nginx) = nginx_or_skip("nginx_private_requires_basic_auth") else { return };
    let url = format!("{}cas/ab/cdef", nginx.url("private"));
    assert_eq!(http_request("PUT", &url, b"hidden", &[]).unwrap().0, 401, "{}", nginx.logs());
    assert!(!nginx.root().join("private/cas/ab/cdef").exists());

    let good = format!("Basic {}", base64(format!("{PRIVATE_USER}:{PRIVATE_PASSWORD}").as_bytes()));
    let bad = format!("Basic {}", base64(format!("{PRIVATE_USER}:wrong").as_bytes()));
    assert_eq!(http_request("PUT", &url, b"hidden", &[("Authorization", &bad)]).unwrap().0, 401);
    let (status, _) = http_request("PUT", &url, b"hidden", &[("Authorization", &good)]).unwrap();
    assert_eq!(status, 201, "{}", nginx.logs());
    assert_eq!(http_request("GET", &url, &[], &[]).unwrap().0, 401);
    assert_eq!(http_request("GET", &url, &[], &[("Authorization", &good)]).unwrap(), (200, b"hidden".to_vec()));
    // /cache/ stays open and separate.
    let open = url.replace("/private/", "/cache/");
    assert_eq!(http_request("GET", &open, &[], &[]).unwrap().0, 404);
}

#[test]
fn nginx_drop_closes_the_port_and_removes_the_directory() {
    let Some(nginx) = nginx_or_skip("nginx_drop_closes_the_port_and_removes_the_directory") else { return };
    let (addr, dir, pid) = (nginx.addr(), nginx.dir().to_path_buf(), nginx.pid());
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(http_request("GET", &nginx.url("cache"), &[], &[]).unwrap().0, 200);
    drop(nginx);
    assert_stopped(addr, &dir);
}

#[test]
fn nginx_instances_run_side_by_side() {
    let (Some(a), Some(b)) = (nginx_or_skip("nginx_instances_run_side_by_side"), nginx_or_skip("side_by_side b"))
    else {
        return;
    };
    assert_ne!(a.addr(), b.addr());
    let key = "k/v";
    assert_eq!(http_request("PUT", &format!("{}{key}", a.url("cache")), b"a", &[]).unwrap().0, 201);
    assert_eq!(http_request("GET", &format!("{}{key}", b.url("/cache/")), &[], &[]).unwrap().0, 404);
}

#[test]
fn moto_stores_and_serves_objects_in_its_bucket() {
    let Some(moto) = moto_or_skip("moto_stores_and_serves_objects_in_its_bucket") else { return };
    assert_eq!(moto.bucket(), "aurora");
    assert!(moto.endpoint().starts_with("http://127.0.0.1:"));
    let bucket_url = format!("{}/{}", moto.endpoint(), moto.bucket());
    assert_eq!(http_request("HEAD", &bucket_url, &[], &[]).unwrap().0, 200, "{}", moto.logs());

    let url = format!("{bucket_url}/cas/ab/cdef");
    let body = payload();
    let (status, reply) = http_request("PUT", &url, &body, &[]).unwrap();
    assert_eq!(status, 200, "{}{}", String::from_utf8_lossy(&reply), moto.logs());
    let signed = [("Authorization", UNCHECKED_S3_AUTHORIZATION)];
    let (status, got) = http_request("GET", &url, &[], &signed).unwrap();
    assert_eq!(status, 200, "{}", moto.logs());
    assert!(got == body, "GET returned {} bytes that differ from the {} PUT", got.len(), body.len());
    assert_eq!(http_request("HEAD", &url, &[], &signed).unwrap(), (200, Vec::new()));
    assert_eq!(http_request("GET", &format!("{bucket_url}/cas/ab/missing"), &[], &signed).unwrap().0, 404);
    // Unsigned reads are anonymous: denied for private objects, allowed for public-read ones.
    assert_eq!(http_request("GET", &url, &[], &[]).unwrap().0, 403);
    let public = format!("{bucket_url}/public");
    assert_eq!(http_request("PUT", &public, b"open", &[("x-amz-acl", "public-read")]).unwrap().0, 200);
    assert_eq!(http_request("GET", &public, &[], &[]).unwrap(), (200, b"open".to_vec()));
    assert!(moto.logs().contains("PUT /aurora/cas/ab/cdef"), "{}", moto.logs());

    let (addr, dir) = (moto.addr(), moto.dir().to_path_buf());
    drop(moto);
    assert_stopped(addr, &dir);
}

const HOLDER_ENV: &str = "AURORA_SERVERS_TEST_HOLDER";

/// Run by `servers_die_with_a_killed_test_process` in a child test process: starts both servers, reports them on
/// stdout and waits to be killed.
#[test]
#[ignore = "helper of servers_die_with_a_killed_test_process"]
fn holder() {
    if std::env::var_os(HOLDER_ENV).is_none() {
        return;
    }
    let (Some(nginx), Some(moto)) = (nginx_or_skip("holder"), moto_or_skip("holder")) else { return };
    println!(
        "HOLDING {} {} {} {} {} {}",
        nginx.pid(),
        nginx.addr().port(),
        nginx.dir().display(),
        moto.pid(),
        moto.addr().port(),
        moto.dir().display()
    );
    thread::sleep(Duration::from_secs(60));
}

/// Whether `pid` is gone (or a zombie nobody reaped: PID 1 of a container may not).
fn dead(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |stat| stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
}

#[test]
fn servers_die_with_a_killed_test_process() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["holder", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(HOLDER_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest prints `test holder ... ` on the same line first.
            if let Some((_, rest)) = line.split_once("HOLDING ") {
                let _ = tx.send(rest.split(' ').map(str::to_owned).collect::<Vec<_>>());
            }
        }
    });
    let Ok(held) = rx.recv_timeout(Duration::from_secs(50)) else {
        let status = child.wait().unwrap();
        assert!(status.success(), "holder failed: {status}");
        return; // skipped: the servers are not available (the holder said why on stderr)
    };
    child.kill().unwrap();
    child.wait().unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    for (pid, port) in [(&held[0], &held[1]), (&held[3], &held[4])] {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port.parse::<u16>().unwrap()));
        while !(dead(pid) && TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()) {
            assert!(Instant::now() < deadline, "server {pid} on {addr} outlived the killed test process");
            thread::sleep(Duration::from_millis(20));
        }
    }
    // Their directories are left behind, and swept by the next start.
    let dirs = [PathBuf::from(&held[2]), PathBuf::from(&held[5])];
    assert!(dirs.iter().all(|d| d.exists()));
    let Some(_nginx) = nginx_or_skip("servers_die_with_a_killed_test_process") else { return };
    for dir in dirs {
        assert!(!dir.exists(), "{} was not swept", dir.display());
    }
}
