//! The languages `eval.code` runs, and how each one's program is compiled and run in the
//! [sandbox](crate::sandbox): the toolchain's executables, their arguments, and each language's
//! default address-space limit.
//!
//! A program runs as a [`Recipe`]: its source is written to a fixed file name in a fresh run
//! directory, then each [`Step`] (compile, run) is its own sandboxed process with the run's
//! limits, in that directory. The steps are those of MultiPL-E's evaluators (`g++ -std=c++17`,
//! `javac` + `java -ea`, `php`, `bash`, `tsc --target esnext` + `node`, `mcs -d:DEBUG` + `mono`),
//! with what keeps their messages byte-identical from run to run: sources named relatively, or
//! fed on stdin where the tool would print an absolute path (Python, PHP, node), and C#
//! assemblies compiled `-deterministic` (their stack traces name the module id).
//!
//! | language | MultiPL-E | steps | memory (`RLIMIT_AS`) | Debian packages |
//! |---|---|---|---|---|
//! | Python | `py` | `python3 - < program.py` | 1024 MiB | `python3` |
//! | C++ | `cpp` | `g++ program.cpp -o program -std=c++17`, `./program` | 1024 MiB | `g++` |
//! | Java | `java` | `javac -d . Problem.java`, `java -ea Problem` (javatuples on the class path) | 2048 MiB, heap a quarter | `openjdk-17-jdk-headless`, `libjavatuples-java` |
//! | PHP | `php` | `php < program.php` | 1024 MiB | `php-cli` |
//! | Bash | `sh` | `bash program.sh` | 1024 MiB | `bash` |
//! | TypeScript | `ts` | `node tsc --target esnext program.ts`, `node - < program.js` | 2048 MiB, heap a quarter | `nodejs` + npm `typescript@5.9.3` |
//! | JavaScript | `js` | `node - < program.js` | 2048 MiB, heap a quarter | `nodejs` |
//! | C# | `cs` | `mcs -d:DEBUG -deterministic program.cs`, `mono program.exe` | 1024 MiB | `mono-mcs` |
//!
//! The JVM and V8 reserve far more address space than they use, so their defaults are larger,
//! and their heaps are capped explicitly (`-Xmx`, `--max-old-space-size`: a quarter of the limit)
//! so that neither depends on the machine's RAM. The JVMs run with the serial collector, C1
//! only (`-XX:TieredStopAtLevel=1`: quick start) and no `hsperfdata` files. C# fails on mono's
//! assertion trace or an unhandled exception in stderr, as MultiPL-E decides (mono exits 0 after
//! a failed `Debug.Assert`). Changing a step or a default changes verdicts: bump `eval.code`'s
//! version.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::sandbox::{self, Limits, SandboxError};

/// The `typescript` npm package `tsc` comes from (installed by `.ci/run` and `cargo xtask test`
/// into `~/.cache/aurora/typescript-VERSION`).
pub const TYPESCRIPT_VERSION: &str = "5.9.3";
/// Where Debian's `libjavatuples-java` puts the jar MultiPL-E's Java problems import.
pub const JAVATUPLES_JAR: &str = "/usr/share/java/javatuples.jar";
/// Overrides where `tsc` is found (the `tsc` script of a `typescript` package).
pub const TSC_ENV: &str = "AURORA_TSC";

/// A language programs are run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Python,
    Cpp,
    Java,
    Php,
    Bash,
    TypeScript,
    JavaScript,
    CSharp,
}

impl Language {
    pub const ALL: [Language; 8] = [
        Language::Python,
        Language::Cpp,
        Language::Java,
        Language::Php,
        Language::Bash,
        Language::TypeScript,
        Language::JavaScript,
        Language::CSharp,
    ];

    /// MultiPL-E's name of the language (its `language` field; bigcode's task `multiple-NAME`).
    pub fn multiple_name(self) -> &'static str {
        match self {
            Language::Python => "py",
            Language::Cpp => "cpp",
            Language::Java => "java",
            Language::Php => "php",
            Language::Bash => "sh",
            Language::TypeScript => "ts",
            Language::JavaScript => "js",
            Language::CSharp => "cs",
        }
    }

    /// The language a MultiPL-E `language` field names (its short names, and a few long ones).
    pub fn from_multiple(name: &str) -> Option<Language> {
        let alias = match name {
            "python" => Language::Python,
            "c++" => Language::Cpp,
            "bash" => Language::Bash,
            "typescript" => Language::TypeScript,
            "javascript" => Language::JavaScript,
            "csharp" | "c#" => Language::CSharp,
            _ => return Language::ALL.into_iter().find(|l| l.multiple_name() == name),
        };
        Some(alias)
    }

    pub fn display_name(self) -> &'static str {
        match self {
            Language::Python => "Python",
            Language::Cpp => "C++",
            Language::Java => "Java",
            Language::Php => "PHP",
            Language::Bash => "Bash",
            Language::TypeScript => "TypeScript",
            Language::JavaScript => "JavaScript",
            Language::CSharp => "C#",
        }
    }

    /// The address-space limit of each process when `limits.memory_mb` is not given.
    pub fn default_memory_mb(self) -> u64 {
        match self {
            Language::Java | Language::TypeScript | Language::JavaScript => 2048,
            _ => 1024,
        }
    }

    /// The file the program is written to in the run directory.
    pub fn source_file(self) -> &'static str {
        match self {
            Language::Python => "program.py",
            Language::Cpp => "program.cpp",
            // MultiPL-E's Java programs are `class Problem`.
            Language::Java => "Problem.java",
            Language::Php => "program.php",
            Language::Bash => "program.sh",
            Language::TypeScript => "program.ts",
            Language::JavaScript => "program.js",
            Language::CSharp => "program.cs",
        }
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.display_name())
    }
}

/// A tool a language needs that this machine lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{language} programs need {what}, which {where_}: {install}")]
pub struct ToolchainError {
    pub language: Language,
    /// "`g++`"
    pub what: String,
    /// "is not on PATH (\"/usr/bin:/bin\")"
    pub where_: String,
    /// "install Debian's `g++` (`apt-get install g++`)"
    pub install: String,
}

/// What runs a program: the file its source goes to and the steps, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub source: &'static str,
    pub steps: Vec<Step>,
}

/// One sandboxed process of a run, in the run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub exe: Exe,
    pub args: Vec<OsString>,
    /// A file of the run directory given as stdin (otherwise stdin is empty).
    pub stdin: Option<&'static str>,
    /// Set besides `PATH`, `LANG`, `HOME` and `TMPDIR`.
    pub env: Vec<(&'static str, String)>,
    /// The step fails if stderr ever contains one of these, whatever its exit status.
    pub fail_on_stderr: &'static [&'static str],
    /// The tool reports its errors on stdout (`tsc`): a failure's detail starts with stdout.
    pub reports_on_stdout: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exe {
    /// A tool of the machine.
    Tool(PathBuf),
    /// A file a previous step wrote into the run directory, run as `./NAME`.
    Built(&'static str),
}

impl Step {
    fn tool(exe: &Path, args: &[&str]) -> Step {
        Step {
            exe: Exe::Tool(exe.to_path_buf()),
            args: args.iter().map(OsString::from).collect(),
            stdin: None,
            env: Vec::new(),
            fail_on_stderr: &[],
            reports_on_stdout: false,
        }
    }

    fn stdin(mut self, file: &'static str) -> Step {
        self.stdin = Some(file);
        self
    }
}

/// The executables of one language, found on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tools {
    /// In the order of [`needs`].
    found: Vec<PathBuf>,
}

/// What a language needs: (name on `PATH`, Debian package).
fn needs(language: Language) -> &'static [(&'static str, &'static str)] {
    match language {
        Language::Python => &[("python3", "python3")],
        Language::Cpp => &[("g++", "g++")],
        Language::Java => &[("javac", "openjdk-17-jdk-headless"), ("java", "openjdk-17-jdk-headless")],
        Language::Php => &[("php", "php-cli")],
        Language::Bash => &[("bash", "bash")],
        Language::TypeScript | Language::JavaScript => &[("node", "nodejs")],
        Language::CSharp => &[("mcs", "mono-mcs"), ("mono", "mono-mcs")],
    }
}

/// `name` on `path_var`.
fn which(name: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path_var?)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Where `.ci/run` and `cargo xtask test` install `tsc`: `$XDG_CACHE_HOME/aurora` or
/// `~/.cache/aurora`, `typescript-VERSION/node_modules/typescript/bin/tsc`.
pub fn cached_tsc(xdg_cache_home: Option<&OsStr>, home: Option<&OsStr>) -> Option<PathBuf> {
    let root = match (xdg_cache_home.filter(|v| !v.is_empty()), home.filter(|v| !v.is_empty())) {
        (Some(xdg), _) => PathBuf::from(xdg).join("aurora"),
        (None, Some(home)) => PathBuf::from(home).join(".cache/aurora"),
        (None, None) => return None,
    };
    Some(root.join(format!("typescript-{TYPESCRIPT_VERSION}/node_modules/typescript/bin/tsc")))
}

/// The environment a toolchain is looked up in (the process's, or a test's).
#[derive(Debug, Clone, Default)]
pub struct LookupEnv {
    pub path: Option<OsString>,
    pub tsc: Option<OsString>,
    pub xdg_cache_home: Option<OsString>,
    pub home: Option<OsString>,
    /// The javatuples jar (Debian's by default).
    pub javatuples: PathBuf,
}

impl LookupEnv {
    pub fn of_process() -> LookupEnv {
        LookupEnv {
            path: std::env::var_os("PATH"),
            tsc: std::env::var_os(TSC_ENV),
            xdg_cache_home: std::env::var_os("XDG_CACHE_HOME"),
            home: std::env::var_os("HOME"),
            javatuples: PathBuf::from(JAVATUPLES_JAR),
        }
    }
}

/// Finds what `language` needs in `env`.
fn lookup(language: Language, env: &LookupEnv) -> Result<Tools, ToolchainError> {
    let path_shown = env.path.as_deref().unwrap_or_default().to_string_lossy().into_owned();
    let mut found = Vec::new();
    for (name, package) in needs(language) {
        let Some(exe) = which(name, env.path.as_deref()) else {
            return Err(ToolchainError {
                language,
                what: format!("`{name}`"),
                where_: format!("is not on PATH ({path_shown:?})"),
                install: format!("install Debian's `{package}` (`apt-get install {package}`)"),
            });
        };
        found.push(exe);
    }
    match language {
        Language::Java if !env.javatuples.is_file() => {
            return Err(ToolchainError {
                language,
                what: "the javatuples jar (MultiPL-E's Java problems import `org.javatuples`)".into(),
                where_: format!("is not at {}", env.javatuples.display()),
                install: "install Debian's `libjavatuples-java` (`apt-get install libjavatuples-java`)".into(),
            });
        }
        Language::TypeScript => found.push(find_tsc(env)?),
        _ => {}
    }
    Ok(Tools { found })
}

/// `tsc`: `$AURORA_TSC`, else the pinned package in the aurora cache, else `tsc` on `PATH`.
fn find_tsc(env: &LookupEnv) -> Result<PathBuf, ToolchainError> {
    let install = format!(
        "install the pinned compiler with `npm install --prefix ~/.cache/aurora/typescript-{TYPESCRIPT_VERSION} \
         typescript@{TYPESCRIPT_VERSION}` (what `.ci/run` and `cargo xtask test` do), or point {TSC_ENV} at a `tsc`"
    );
    if let Some(tsc) = env.tsc.as_deref().filter(|v| !v.is_empty()) {
        let tsc = PathBuf::from(tsc);
        return if tsc.is_file() {
            Ok(tsc)
        } else {
            Err(ToolchainError {
                language: Language::TypeScript,
                what: format!("the TypeScript compiler ({TSC_ENV}={})", tsc.display()),
                where_: "is not a file".into(),
                install,
            })
        };
    }
    let cached = cached_tsc(env.xdg_cache_home.as_deref(), env.home.as_deref());
    if let Some(tsc) = cached.iter().find(|p| p.is_file()) {
        return Ok(tsc.clone());
    }
    if let Some(tsc) = which("tsc", env.path.as_deref()) {
        return Ok(tsc);
    }
    Err(ToolchainError {
        language: Language::TypeScript,
        what: "the TypeScript compiler `tsc`".into(),
        where_: format!(
            "is neither at {} nor on PATH",
            cached.map_or_else(|| "~/.cache/aurora/...".to_string(), |p| p.display().to_string())
        ),
        install,
    })
}

/// This machine's tools for `language`, found once per process (a failure is retried next
/// time).
fn tools(language: Language) -> Result<&'static Tools, ToolchainError> {
    static FOUND: [OnceLock<Tools>; Language::ALL.len()] = [const { OnceLock::new() }; Language::ALL.len()];
    let slot = &FOUND[Language::ALL.iter().position(|l| *l == language).expect("in ALL")];
    if let Some(tools) = slot.get() {
        return Ok(tools);
    }
    let mut found = lookup(language, &LookupEnv::of_process())?;
    if language == Language::Python {
        // Past pyenv-style shims, as the sandbox always ran it.
        found.found[0] = sandbox::find_python3(std::env::var_os("PATH").as_deref()).map_err(|e| ToolchainError {
            language,
            what: "a working `python3`".into(),
            where_: format!("is missing ({e})"),
            install: "install Debian's `python3` (`apt-get install python3`)".into(),
        })?;
    }
    Ok(slot.get_or_init(|| found))
}

/// Whether this machine can run `language`'s programs (what planning checks).
pub fn check(language: Language) -> Result<(), ToolchainError> {
    tools(language).map(|_| ())
}

/// Whether `env` provides what `language` needs (for tests of the lookup itself).
pub fn check_in(language: Language, env: &LookupEnv) -> Result<(), ToolchainError> {
    lookup(language, env).map(|_| ())
}

/// The address-space limit of one process, MiB: `limits`' own, or the language's default.
pub fn memory_mb(language: Language, configured: Option<u64>) -> u64 {
    configured.unwrap_or_else(|| language.default_memory_mb())
}

/// The JVM's flags under an address-space limit of `memory_bytes`.
fn jvm_flags(memory_bytes: u64) -> Vec<String> {
    let heap_mb = (memory_bytes >> 20) / 4;
    vec![
        format!("-Xmx{heap_mb}m"),
        "-XX:CompressedClassSpaceSize=64m".into(),
        "-XX:ReservedCodeCacheSize=64m".into(),
        "-XX:+UseSerialGC".into(),
        "-XX:TieredStopAtLevel=1".into(),
        "-XX:-UsePerfData".into(),
    ]
}

/// How to run a `language` program under `limits` on this machine.
pub fn recipe(language: Language, limits: &Limits) -> Result<Recipe, SandboxError> {
    let tools = &tools(language)?.found;
    let source = language.source_file();
    let steps = match language {
        Language::Python => {
            let mut run = Step::tool(&tools[0], &["-"]).stdin(source);
            run.env = vec![("PYTHONDONTWRITEBYTECODE", "1".into()), ("PYTHONHASHSEED", "0".into())];
            vec![run]
        }
        Language::Cpp => vec![
            Step::tool(&tools[0], &[source, "-o", "program", "-std=c++17"]),
            Step { exe: Exe::Built("program"), ..Step::tool(Path::new(""), &[]) },
        ],
        Language::Java => {
            let flags = jvm_flags(limits.memory_bytes);
            let mut javac: Vec<String> = flags.iter().map(|f| format!("-J{f}")).collect();
            javac.extend(["-encoding", "UTF8", "-cp", JAVATUPLES_JAR, "-d", ".", source].map(String::from));
            let mut java = flags;
            java.extend(["-ea", "-cp", &format!(".:{JAVATUPLES_JAR}"), "Problem"].map(String::from));
            let strs = |v: &[String]| v.iter().map(OsString::from).collect();
            vec![
                Step { args: strs(&javac), ..Step::tool(&tools[0], &[]) },
                Step { args: strs(&java), ..Step::tool(&tools[1], &[]) },
            ]
        }
        // PHP names a script file by its absolute path in every message; stdin is
        // "Standard input code". Errors go to stderr once, whatever php.ini says.
        Language::Php => vec![
            Step::tool(&tools[0], &["-d", "display_errors=stderr", "-d", "log_errors=0", "-d", "memory_limit=-1"])
                .stdin(source),
        ],
        Language::Bash => vec![Step::tool(&tools[0], &[source])],
        Language::TypeScript | Language::JavaScript => {
            let heap = format!("--max-old-space-size={}", (limits.memory_bytes >> 20) / 4);
            // node names a script file by its absolute path in stack traces; stdin is `[stdin]`.
            let run = Step::tool(&tools[0], &[&heap, "-"]).stdin("program.js");
            if language == Language::JavaScript {
                vec![run]
            } else {
                let tsc = tools[1].to_string_lossy();
                let tsc = Step {
                    reports_on_stdout: true,
                    ..Step::tool(&tools[0], &[&heap, &tsc, "--target", "esnext", source])
                };
                vec![tsc, run]
            }
        }
        Language::CSharp => {
            let mut run = Step::tool(&tools[1], &["program.exe"]);
            run.env = vec![("MONO_TRACE_LISTENER", "Console.Error".into())];
            run.fail_on_stderr = &["System.Diagnostics.DefaultTraceListener.Fail", "Unhandled Exception"];
            vec![
                Step::tool(
                    &tools[0],
                    &["-d:DEBUG", "-r:System.Numerics.dll", "-deterministic", "-out:program.exe", source],
                ),
                run,
            ]
        }
    };
    Ok(Recipe { source, steps })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiple_names_round_trip() {
        for l in Language::ALL {
            assert_eq!(Language::from_multiple(l.multiple_name()), Some(l));
        }
        assert_eq!(Language::from_multiple("bash"), Some(Language::Bash));
        assert_eq!(Language::from_multiple("rkt"), None);
    }

    #[test]
    fn a_missing_tool_names_the_debian_package() {
        let empty = tempfile::tempdir().unwrap();
        let env = LookupEnv {
            path: Some(empty.path().as_os_str().to_owned()),
            javatuples: empty.path().join("javatuples.jar"),
            ..LookupEnv::default()
        };
        let shown = format!("{:?}", empty.path().display().to_string());
        let cases = [
            (
                Language::Cpp,
                "C++ programs need `g++`, which is not on PATH (P): install Debian's `g++` (`apt-get install g++`)",
            ),
            (
                Language::Java,
                "Java programs need `javac`, which is not on PATH (P): install Debian's `openjdk-17-jdk-headless` (`apt-get install openjdk-17-jdk-headless`)",
            ),
            (
                Language::Php,
                "PHP programs need `php`, which is not on PATH (P): install Debian's `php-cli` (`apt-get install php-cli`)",
            ),
            (
                Language::CSharp,
                "C# programs need `mcs`, which is not on PATH (P): install Debian's `mono-mcs` (`apt-get install mono-mcs`)",
            ),
            (
                Language::TypeScript,
                "TypeScript programs need `node`, which is not on PATH (P): install Debian's `nodejs` (`apt-get install nodejs`)",
            ),
        ];
        for (language, want) in cases {
            assert_eq!(check_in(language, &env).unwrap_err().to_string(), want.replace("(P)", &format!("({shown})")));
        }
        // With the tools but not the jar, Java names the jar's package.
        let tools = tempfile::tempdir().unwrap();
        for name in ["javac", "java", "node"] {
            let p = tools.path().join(name);
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        }
        let env = LookupEnv { path: Some(tools.path().as_os_str().to_owned()), ..env };
        let err = check_in(Language::Java, &env).unwrap_err().to_string();
        assert!(err.ends_with("install Debian's `libjavatuples-java` (`apt-get install libjavatuples-java`)"), "{err}");
        let err = check_in(Language::TypeScript, &env).unwrap_err().to_string();
        assert!(
            err.starts_with("TypeScript programs need the TypeScript compiler `tsc`, which is neither at"),
            "{err}"
        );
        assert!(err.contains(&format!("typescript@{TYPESCRIPT_VERSION}")), "{err}");
    }

    #[test]
    fn the_cached_tsc_follows_xdg_then_home() {
        let tail = format!("typescript-{TYPESCRIPT_VERSION}/node_modules/typescript/bin/tsc");
        assert_eq!(cached_tsc(Some("/x".as_ref()), Some("/h".as_ref())), Some(Path::new("/x/aurora").join(&tail)));
        assert_eq!(cached_tsc(Some("".as_ref()), Some("/h".as_ref())), Some(Path::new("/h/.cache/aurora").join(&tail)));
        assert_eq!(cached_tsc(None, None), None);
    }

    #[test]
    fn xtask_installs_the_typescript_version_the_sandbox_looks_for() {
        let xtask =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../xtask/src/toolchains.rs")).unwrap();
        assert!(
            xtask.contains(&format!("\"{TYPESCRIPT_VERSION}\"")),
            "xtask/src/toolchains.rs pins another typescript"
        );
    }
}
