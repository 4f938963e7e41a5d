//! The sandbox contains what a model completion may do: fork bombs, memory hogs, endless sleeps,
//! huge files, network access, output floods, detached daemons; in Python and in every other
//! language `eval.code` runs (a fork bomb, an endless loop and a huge allocation each, compiled
//! and run with the real toolchain). Short limits keep this fast.

use std::net::TcpListener;
use std::time::Duration;

use aurora_eval::sandbox::{Limits, SandboxError, Status, find_python3, isolation, run, run_python};
use aurora_eval::toolchain::Language;
use aurora_process_testkit::Skip;

/// How to get the namespaces the sandbox uses (`unshare` of PID and network namespaces).
const NAMESPACES_HOW: &str = "run as root, or allow unprivileged user namespaces (`sysctl \
    kernel.unprivileged_userns_clone=1`; on Ubuntu also `kernel.apparmor_restrict_unprivileged_userns=0`; in a \
    container, a seccomp profile that permits `unshare`)";

fn limits() -> Limits {
    Limits {
        wall: Duration::from_secs(3),
        cpu_s: 3,
        memory_bytes: 512 << 20,
        processes: 16,
        file_size_bytes: 1 << 20,
        output_bytes: 4096,
    }
}

/// A string no other process on the machine has in its command line.
fn marker(what: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("aurora-sandbox-test-{what}-{}-{nanos}", std::process::id())
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(marker.len()).any(|w| w == marker.as_bytes()))
        })
        .collect()
}

/// Python that re-executes itself with `marker` as its argument (so every process it forks
/// carries the marker in /proc/PID/cmdline), then runs `body`.
fn marked(marker: &str, body: &str) -> String {
    // The sandbox feeds the program on stdin; the re-exec passes it with `-c` instead.
    let inner = format!("import os, sys\n{body}");
    format!(
        "import os, sys\nif len(sys.argv) < 2:\n    os.execv(sys.executable, [sys.executable, '-c', {inner:?}, {marker:?}])\n{body}"
    )
}

#[test]
fn reports_its_isolation() {
    eprintln!("sandbox isolation: {}", isolation());
}

#[test]
fn a_passing_program_passes_and_its_stdout_is_kept() {
    let out = run_python("print(sum(range(10)))\n", &limits()).unwrap();
    assert_eq!(out.status, Status::Passed);
    assert_eq!(out.stdout, "45\n");
    assert!(!out.stdout_truncated);
}

#[test]
fn a_failing_assertion_fails_with_the_stderr_tail() {
    let out = run_python("assert 1 + 1 == 3, 'arithmetic'\n", &limits()).unwrap();
    match out.status {
        Status::Failed { exit_code, stderr_tail } => {
            assert_eq!(exit_code, 1);
            assert!(stderr_tail.contains("AssertionError: arithmetic"), "{stderr_tail}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn a_crash_is_reported_with_its_signal() {
    // The supervisor dies of Python's signal, so the caller sees Python's status.
    let out = run_python("import ctypes\nctypes.string_at(0)\n", &limits()).unwrap();
    assert_eq!(out.status, Status::Killed { signal: libc::SIGSEGV });
}

#[test]
fn a_fork_bomb_is_contained_and_leaves_no_process() {
    let marker = marker("forkbomb");
    let program = marked(&marker, "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n");
    let _one_at_a_time = SATURATING.lock().unwrap_or_else(|e| e.into_inner());
    let limits = Limits { wall: Duration::from_secs(2), ..limits() };
    let out = run_python(&program, &limits).unwrap();
    assert!(matches!(out.status, Status::TimedOut | Status::Killed { .. }), "{:?}", out.status);
    assert!(out.wall < limits.wall + Duration::from_secs(3), "took {:?}", out.wall);
    assert_eq!(processes_with(&marker), Vec::<u32>::new(), "fork bomb processes survived the run");
}

#[test]
fn a_detached_daemon_does_not_outlive_the_run() {
    let iso = isolation();
    if !iso.namespaces.no_network() && iso.pids_cgroup.is_none() {
        Skip::new(format!(
            "neither namespaces nor a pids cgroup here ({iso}), so a setsid daemon escapes: {NAMESPACES_HOW}; or \
             delegate the pids controller to this process's cgroup"
        ))
        .report();
        return;
    }
    let marker = marker("daemon");
    // Double fork + setsid: the classic escape from a process group and from its parent.
    let program = marked(
        &marker,
        "import time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(1000)\n    os._exit(0)\nos.wait()\nprint('parent done')\n",
    );
    let out = run_python(&program, &limits()).unwrap();
    assert_eq!(out.status, Status::Passed);
    assert_eq!(out.stdout, "parent done\n");
    assert_eq!(processes_with(&marker), Vec::<u32>::new(), "the daemon survived the run");
}

#[test]
fn allocating_10_gb_fails_with_a_memory_error() {
    let out = run_python("x = bytearray(10 * 1024**3)\n", &limits()).unwrap();
    match out.status {
        Status::Failed { stderr_tail, .. } => assert!(stderr_tail.contains("MemoryError"), "{stderr_tail}"),
        other => panic!("expected a MemoryError failure, got {other:?}"),
    }
}

#[test]
fn sleeping_forever_times_out_at_the_wall_limit() {
    let limits = Limits { wall: Duration::from_millis(500), ..limits() };
    let out = run_python("import time\ntime.sleep(1000)\n", &limits).unwrap();
    assert_eq!(out.status, Status::TimedOut);
    // Killing takes well under the supervisor's 2 s grace.
    assert!(out.wall >= limits.wall && out.wall < limits.wall + Duration::from_secs(2), "took {:?}", out.wall);
}

#[test]
fn spinning_is_stopped_at_the_cpu_limit() {
    // A generous wall, so that under load the CPU limit (not the wall) is what stops it.
    let limits = Limits { wall: Duration::from_secs(60), cpu_s: 1, ..limits() };
    let _one_at_a_time = SATURATING.lock().unwrap_or_else(|e| e.into_inner());
    let out = run_python("while True:\n    pass\n", &limits).unwrap();
    assert!(
        matches!(out.status, Status::Killed { signal } if signal == libc::SIGXCPU || signal == libc::SIGKILL),
        "{:?}",
        out.status
    );
}

#[test]
fn writing_a_1_gb_file_is_stopped_at_the_file_size_limit() {
    let program = "import os\nchunk = b'x' * (1 << 20)\ntry:\n    with open('big', 'wb') as f:\n        for _ in range(1024):\n            f.write(chunk)\n            f.flush()\nexcept OSError as e:\n    print(os.path.getsize('big'), e.errno)\n    raise SystemExit(3)\n";
    let limits = limits();
    let out = run_python(program, &limits).unwrap();
    assert!(matches!(out.status, Status::Failed { exit_code: 3, .. }), "{:?}", out.status);
    let (size, errno) = out.stdout.trim().split_once(' ').unwrap();
    assert!(size.parse::<u64>().unwrap() <= limits.file_size_bytes, "{size}");
    assert_eq!(errno.parse::<i32>().unwrap(), libc::EFBIG);
}

#[test]
fn the_network_is_unreachable_when_namespaces_are_available() {
    let iso = isolation();
    if !iso.namespaces.no_network() {
        Skip::new(format!("no network namespace here ({iso}): {NAMESPACES_HOW}")).report();
        return;
    }
    // A listener the program could reach if it shared our network.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let program = format!(
        "import socket\nfor addr in [('127.0.0.1', {port}), ('1.1.1.1', 53)]:\n    try:\n        socket.create_connection(addr, timeout=1).close()\n        print('connected', addr)\n    except OSError as e:\n        print('refused', e.errno)\n"
    );
    let out = run_python(&program, &limits()).unwrap();
    assert_eq!(out.status, Status::Passed);
    assert!(!out.stdout.contains("connected"), "{}", out.stdout);
    assert_eq!(out.stdout.lines().count(), 2, "{}", out.stdout);
}

#[test]
fn a_stdout_flood_is_capped() {
    // 256 MiB in all: read and dropped past the cap, so the writer never blocks.
    let program = "import sys\nfor _ in range(4096):\n    sys.stdout.write('x' * 65536)\nsys.stderr.write('e' * 100000 + 'END')\nsys.exit(2)\n";
    let out = run_python(program, &limits()).unwrap();
    let Status::Failed { exit_code: 2, stderr_tail } = out.status else { panic!("{:?}", out.status) };
    // stderr keeps its tail, where the traceback's last line is.
    assert_eq!(stderr_tail.len(), limits().output_bytes);
    assert!(stderr_tail.ends_with("eeeEND"), "{}", &stderr_tail[stderr_tail.len() - 10..]);
    assert_eq!(out.stdout, "x".repeat(limits().output_bytes));
    assert!(out.stdout_truncated);
}

#[test]
fn an_endless_stdout_flood_still_times_out() {
    let limits = Limits { wall: Duration::from_millis(800), ..limits() };
    let out = run_python("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", &limits).unwrap();
    assert_eq!(out.status, Status::TimedOut);
    assert!(out.stdout.len() <= limits.output_bytes);
    assert!(out.wall < limits.wall + Duration::from_secs(2), "took {:?}", out.wall);
}

#[test]
fn the_environment_is_cleaned_and_the_temp_dir_removed() {
    let program = "import os, json\nprint(json.dumps({'cwd': os.getcwd(), 'env': dict(os.environ)}))\n";
    let out = run_python(program, &limits()).unwrap();
    assert_eq!(out.status, Status::Passed);
    let seen: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let cwd = seen["cwd"].as_str().unwrap();
    let mut names: Vec<&str> = seen["env"].as_object().unwrap().keys().map(String::as_str).collect();
    names.retain(|n| *n != "LC_CTYPE"); // Python may set it itself when coercing the C locale
    names.sort();
    assert_eq!(names, ["HOME", "LANG", "PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONHASHSEED", "TMPDIR"]);
    assert_eq!(seen["env"]["HOME"], cwd);
    assert_eq!(seen["env"]["PYTHONHASHSEED"], "0");
    assert!(!std::path::Path::new(cwd).exists(), "{cwd} was left behind");
}

#[test]
fn a_missing_python3_is_a_clear_error() {
    let empty = tempfile::tempdir().unwrap();
    for path in [String::new(), empty.path().display().to_string()] {
        let err = find_python3(Some(path.as_ref())).unwrap_err();
        assert!(matches!(err, SandboxError::Python3Missing { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "python3 was not found on PATH ({path:?}): install Python 3 or put the directory holding `python3` on PATH"
            )
        );
    }
    assert!(find_python3(None).is_err());
}

#[test]
fn a_failing_program_fails_with_the_same_bytes_in_every_run() {
    let program = "def f():\n    raise ValueError('boom')\nf()\n";
    let run = || run_python(program, &limits()).unwrap().status;
    let first = run();
    let Status::Failed { stderr_tail, .. } = &first else { panic!("{first:?}") };
    assert!(stderr_tail.contains("File \"<stdin>\", line 2, in f"), "{stderr_tail}");
    assert!(!stderr_tail.contains("aurora-sandbox-"), "the temp dir leaks into the output: {stderr_tail}");
    assert_eq!(run(), first);
}

/// Whether `language`'s toolchain is here; if not, the test is skipped with what to install (and
/// fails where `CI=true`).
fn have(language: Language) -> bool {
    match aurora_eval::toolchain::check(language) {
        Ok(()) => true,
        Err(e) => {
            Skip::new(e.to_string()).report();
            false
        }
    }
}

/// One test at a time saturates the CPUs with a fork bomb or a loop, so that a compiler in
/// another test still finishes within its wall limit.
static SATURATING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Limits for compiled and JIT-run languages: each step (compile, run) gets them, so the wall
/// leaves room for a compiler under load, and the address space is the language's default.
fn language_limits(language: Language) -> Limits {
    // tsc alone takes about 2 CPU seconds (its collector's threads count too).
    let slow = language == Language::TypeScript;
    Limits {
        wall: Duration::from_secs(if slow { 6 } else { 4 }),
        cpu_s: if slow { 5 } else { 3 },
        memory_bytes: language.default_memory_mb() << 20,
        processes: 16,
        ..limits()
    }
}

/// A fork bomb, an endless loop and a 10 GB allocation written in `language`: each run ends
/// within its limits, the bomb leaves no process behind (its processes carry `MARKER` in their
/// command lines), the loop is stopped (CPU or wall limit) and the allocation fails with
/// `oom_says` in its stderr.
fn contained(language: Language, bomb: &str, endless: &str, allocation: &str, oom_says: &str) {
    if !have(language) {
        return;
    }
    let limits = language_limits(language);
    // Compile + run, each with its own wall, plus the kill grace.
    let bound = 2 * limits.wall + Duration::from_secs(3);
    let marker = marker(&format!("bomb-{}", language.multiple_name()));
    let _one_at_a_time = SATURATING.lock().unwrap_or_else(|e| e.into_inner());
    // Whatever the bomb's status (Bash's classic one returns at once, and its namespace dies with
    // it), nothing of it survives.
    let out = run(language, &bomb.replace("MARKER", &marker), &limits).unwrap();
    assert!(out.wall < bound, "{language} bomb took {:?}", out.wall);
    assert_eq!(processes_with(&marker), Vec::<u32>::new(), "{language} fork bomb processes survived the run");
    eprintln!("{language} fork bomb: {:?} after {:.2?}", out.status, out.wall);

    let out = run(language, endless, &limits).unwrap();
    assert!(
        matches!(out.status, Status::TimedOut | Status::Killed { .. }),
        "{language} endless loop: {:?} {}",
        out.status,
        out.stderr_tail
    );
    assert!(out.wall < bound, "{language} loop took {:?}", out.wall);
    eprintln!("{language} endless loop: {:?} after {:.2?}", out.status, out.wall);

    let out = run(language, allocation, &limits).unwrap();
    assert!(matches!(out.status, Status::Failed { .. } | Status::Killed { .. }), "{language} allocation: {out:?}");
    assert!(out.stderr_tail.contains(oom_says), "{language} allocation: {oom_says:?} not in {:?}", out.stderr_tail);
    assert!(out.wall < bound, "{language} allocation took {:?}", out.wall);
    eprintln!("{language} 10 GB allocation: {:?} after {:.2?}", out.status, out.wall);
}

#[test]
fn cpp_is_contained() {
    contained(
        Language::Cpp,
        "#include <unistd.h>\nint main(int argc, char** argv) {\n    if (argc < 2) { execl(\"/proc/self/exe\", \"program\", \"MARKER\", (char*)0); return 3; }\n    while (1) fork();\n}\n",
        "int main() {\n    volatile unsigned long i = 0;\n    while (1) i++;\n}\n",
        "#include <vector>\n#include <cstdio>\nint main() {\n    std::vector<char> v(10ull << 30, 1);\n    std::printf(\"%d\\n\", v[12345]);\n}\n",
        "std::bad_alloc",
    );
}

#[test]
fn java_is_contained() {
    contained(
        Language::Java,
        "class Problem {\n    public static void main(String[] args) {\n        while (true) {\n            try {\n                new ProcessBuilder(\"java\", \"-Xmx32m\", \"-XX:+UseSerialGC\", \"-XX:TieredStopAtLevel=1\", \"-XX:-UsePerfData\", \"-XX:CompressedClassSpaceSize=16m\", \"-XX:ReservedCodeCacheSize=16m\", \"-cp\", \".\", \"Problem\", \"MARKER\").start();\n            } catch (Throwable e) {\n            }\n        }\n    }\n}\n",
        "class Problem {\n    public static void main(String[] args) {\n        long i = 0;\n        while (true) i++;\n    }\n}\n",
        "class Problem {\n    public static void main(String[] args) {\n        byte[][] b = new byte[8][];\n        for (int i = 0; i < 8; i++) b[i] = new byte[Integer.MAX_VALUE - 8];\n        System.out.println(b.length);\n    }\n}\n",
        "java.lang.OutOfMemoryError",
    );
}

#[test]
fn php_is_contained() {
    contained(
        Language::Php,
        "<?php\npcntl_exec(PHP_BINARY, ['-r', 'while (true) { pcntl_fork(); }', 'MARKER']);\n",
        "<?php\nwhile (true) {}\n",
        "<?php\n$s = str_repeat('x', 10 * 1024 ** 3);\necho strlen($s);\n",
        "memory",
    );
}

#[test]
fn bash_is_contained() {
    contained(
        Language::Bash,
        "[ \"$1\" = MARKER ] || exec bash \"$0\" MARKER\nf() { f | f & }\nf\nwait\n",
        "while :; do :; done\n",
        "printf -v x '%*s' 2000000000 ''\necho ${#x}\n",
        "cannot allocate",
    );
}

/// Node in a loop of spawning nodes that spawn (`node -e BODY BODY MARKER`).
const NODE_BOMB: &str = "const cp = require('child_process');\nconst body = \"const cp = require('child_process'); for (;;) { try { cp.spawn(process.execPath, ['-e', process.argv[1], process.argv[1], 'MARKER'], { stdio: 'ignore' }); } catch (e) {} }\";\nfor (;;) {\n  try { cp.spawn(process.execPath, ['-e', body, body, 'MARKER'], { stdio: 'ignore' }); } catch (e) {}\n}\n";

#[test]
fn typescript_is_contained() {
    contained(
        Language::TypeScript,
        &format!("declare var require: any;\ndeclare var process: any;\n{NODE_BOMB}"),
        "let i = 0;\nfor (;;) { i++; }\n",
        "const b = new ArrayBuffer(10 * 2 ** 30);\nconsole.log(b.byteLength);\n",
        "Array buffer allocation failed",
    );
}

#[test]
fn javascript_is_contained() {
    contained(
        Language::JavaScript,
        NODE_BOMB,
        "let i = 0;\nfor (;;) { i++; }\n",
        "const b = new ArrayBuffer(10 * 2 ** 30);\nconsole.log(b.byteLength);\n",
        "Array buffer allocation failed",
    );
}

#[test]
fn csharp_is_contained() {
    contained(
        Language::CSharp,
        "using System.Diagnostics;\nclass Problem {\n    static void Main(string[] args) {\n        while (true) {\n            try { Process.Start(new ProcessStartInfo(\"mono\", \"program.exe MARKER\") { UseShellExecute = false }); } catch (System.Exception) { }\n        }\n    }\n}\n",
        "class Problem {\n    static void Main() {\n        long i = 0;\n        while (true) i++;\n    }\n}\n",
        "class Problem {\n    static void Main() {\n        var a = new byte[int.MaxValue];\n        var b = new byte[int.MaxValue];\n        var c = new byte[int.MaxValue];\n        System.Console.WriteLine(a.Length + b.Length + c.Length);\n    }\n}\n",
        "OutOfMemoryException",
    );
}

#[test]
fn a_compile_error_fails_with_the_compilers_message_and_the_same_bytes_in_every_run() {
    if !have(Language::Cpp) {
        return;
    }
    let program = "int main() {\n    return undefined_name;\n}\n";
    let run = || run(Language::Cpp, program, &language_limits(Language::Cpp)).unwrap().status;
    let first = run();
    let Status::Failed { exit_code: 1, stderr_tail } = &first else { panic!("{first:?}") };
    assert!(stderr_tail.starts_with("program.cpp: In function "), "{stderr_tail}");
    assert!(stderr_tail.contains("‘undefined_name’ was not declared in this scope"), "{stderr_tail}");
    assert_eq!(run(), first);
}
