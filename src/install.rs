//! Where an installed wsgi-fpm keeps its worker module, and which Python it
//! was installed with (SPEC §1).
//!
//! The master never loads the worker module: it hands the module's path to
//! each pool's own interpreter, which loads it by path (the bootstrap in
//! `master/spawn.rs`). So the module may live wherever an installer put it,
//! and one copy serves every pool, whatever Python each runs. The lookups,
//! in order, where `<prefix>` is the parent of the directory holding the
//! running executable (symlinks resolved, so pipx's `~/.local/bin/wsgi-fpm`
//! leads to pipx's venv):
//!
//! 1. `$WSGI_FPM_WORKER_MODULE`, taken as it is;
//! 2. `libwsgi_fpm_worker.so` beside the executable: a cargo build
//!    (`target/release/`);
//! 3. `<prefix>/lib/wsgi-fpm/libwsgi_fpm_worker.so`: the Debian package
//!    (`/usr/bin/wsgi-fpm`, `/usr/lib/wsgi-fpm/`), or a copy to `/usr/local`;
//! 4. `<prefix>/lib/python3.*/{site,dist}-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so`
//!    (`lib64` when `lib` has none): `pip install` of the wheel, which puts
//!    the binary in `<prefix>/bin` — a venv, pipx, `pip install --user`
//!    (`~/.local`), a pyenv or conda prefix, Debian's python as root
//!    (`/usr/local/.../dist-packages`). If the prefix has it for several
//!    Python versions, the one whose `RECORD` lists this very executable.
//!
//! A wheel's install also names the interpreter it was installed with:
//! `<prefix>/bin/python3.X` for `<prefix>/lib/python3.X/...`, when it is
//! there (a venv, pyenv, conda; not `~/.local` or `/usr/local`, whose
//! Python lives elsewhere): [`installed_python`].
//!
//! The lookups are pure functions over what a [`Probe`] says about the file
//! system, so that every layout is tested without building it.

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

/// The environment variable naming the worker module's file.
pub const MODULE_ENV: &str = "WSGI_FPM_WORKER_MODULE";

/// The module's name where cargo builds it, and in the Debian package.
pub const MODULE_FILE: &str = "libwsgi_fpm_worker.so";
/// The wheel's Python package, in `site-packages`.
pub const WHEEL_PACKAGE: &str = "wsgi_fpm";
/// The module's name in the wheel's package (maturin names an abi3 module so).
pub const WHEEL_MODULE_FILE: &str = "wsgi_fpm_worker.abi3.so";
/// The directory under `<prefix>/lib` a system package keeps it in.
pub const SYSTEM_DIR: &str = "wsgi-fpm";

/// How the worker module was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Named by `$WSGI_FPM_WORKER_MODULE`.
    Env(PathBuf),
    /// Beside the executable.
    BesideExe(PathBuf),
    /// In `<prefix>/lib/wsgi-fpm`.
    SystemLib(PathBuf),
    /// Installed from the wheel into `<prefix>` for `python` (e.g.
    /// `python3.11`, the name of its `lib` directory).
    Wheel {
        module: PathBuf,
        prefix: PathBuf,
        python: String,
    },
}

impl Found {
    pub fn module(&self) -> &Path {
        match self {
            Found::Env(p) | Found::BesideExe(p) | Found::SystemLib(p) => p,
            Found::Wheel { module, .. } => module,
        }
    }
}

/// What the lookups ask of the file system.
pub trait Probe {
    /// A regular file (after symlinks).
    fn is_file(&self, path: &Path) -> bool;
    /// A regular file with an execute bit (after symlinks).
    fn is_executable(&self, path: &Path) -> bool;
    /// The names in a directory, sorted; none if it cannot be read.
    fn list(&self, dir: &Path) -> Vec<String>;
    /// A small text file's contents.
    fn read(&self, path: &Path) -> Option<String>;
}

/// The real file system.
pub struct Disk;

impl Probe for Disk {
    fn is_file(&self, path: &Path) -> bool {
        path.is_file()
    }

    fn is_executable(&self, path: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    }

    fn list(&self, dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    fn read(&self, path: &Path) -> Option<String> {
        // A RECORD lists a few dozen files; anything much larger is not one.
        const LIMIT: u64 = 1 << 20;
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(path)
            .ok()?
            .take(LIMIT)
            .read_to_string(&mut text)
            .ok()?;
        Some(text)
    }
}

/// The worker module for this process: the lookups above, from the running
/// executable and `$WSGI_FPM_WORKER_MODULE`.
pub fn worker_module() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    locate(std::env::var_os(MODULE_ENV).as_deref(), &exe, &Disk).map(|f| f.module().to_path_buf())
}

/// The interpreter this wsgi-fpm was installed with, when it came from the
/// wheel and that interpreter sits beside the executable (SPEC §1: after
/// `pip install` into a venv, that venv's python). The path is left as it
/// is: a venv's `bin/python3.X` is a link that must stay one, so that the
/// interpreter finds the venv's `pyvenv.cfg`. Nothing is run.
pub fn installed_python() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // `$WSGI_FPM_WORKER_MODULE` names a module, not an installation.
    let found = locate(None, &exe, &Disk).ok()?;
    python_of(&found, &Disk)
}

/// The lookups, in order (module documentation). `exe` is the running
/// executable with symlinks resolved, as `std::env::current_exe` gives it.
pub fn locate(env: Option<&OsStr>, exe: &Path, fs: &dyn Probe) -> Result<Found, String> {
    if let Some(p) = env.filter(|p| !p.is_empty()) {
        return Ok(Found::Env(PathBuf::from(p)));
    }
    let Some(dir) = exe.parent() else {
        return Err(format!(
            "worker module not found: `{}` has no directory (set {MODULE_ENV})",
            exe.display()
        ));
    };
    let beside = dir.join(MODULE_FILE);
    if fs.is_file(&beside) {
        return Ok(Found::BesideExe(beside));
    }
    let Some(prefix) = dir.parent() else {
        return Err(not_found(&beside, None));
    };
    let system = prefix.join("lib").join(SYSTEM_DIR).join(MODULE_FILE);
    if fs.is_file(&system) {
        return Ok(Found::SystemLib(system));
    }
    let wheels = wheel_candidates(prefix, fs);
    if wheels.is_empty() {
        return Err(not_found(&beside, Some(prefix)));
    }
    if let [only] = wheels.as_slice() {
        return Ok(only.clone().into_found());
    }
    let ours: Vec<&Wheel> = wheels.iter().filter(|w| w.records(exe, fs)).collect();
    if let [one] = ours.as_slice() {
        return Ok((*one).clone().into_found());
    }
    Err(format!(
        "several worker modules are installed for {}: {}; set {MODULE_ENV} to the one to use",
        exe.display(),
        wheels
            .iter()
            .map(|w| w.module.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

fn not_found(beside: &Path, prefix: Option<&Path>) -> String {
    let mut looked = vec![beside.display().to_string()];
    if let Some(prefix) = prefix {
        looked.push(
            prefix
                .join("lib")
                .join(SYSTEM_DIR)
                .join(MODULE_FILE)
                .display()
                .to_string(),
        );
        looked.push(
            prefix
                .join("lib*/python3.*/{site,dist}-packages")
                .join(WHEEL_PACKAGE)
                .join(WHEEL_MODULE_FILE)
                .display()
                .to_string(),
        );
    }
    format!(
        "worker module not found (looked for {}): build the whole workspace, reinstall wsgi-fpm, or set {MODULE_ENV}",
        looked.join(", ")
    )
}

/// The interpreter a wheel install names: `<prefix>/bin/python3.X`.
pub fn python_of(found: &Found, fs: &dyn Probe) -> Option<PathBuf> {
    match found {
        Found::Wheel { prefix, python, .. } => {
            let p = prefix.join("bin").join(python);
            fs.is_executable(&p).then_some(p)
        }
        _ => None,
    }
}

/// One wheel install of the module in a prefix.
#[derive(Debug, Clone)]
struct Wheel {
    module: PathBuf,
    prefix: PathBuf,
    python: String,
    site: PathBuf,
}

impl Wheel {
    fn into_found(self) -> Found {
        Found::Wheel {
            module: self.module,
            prefix: self.prefix,
            python: self.python,
        }
    }

    /// Whether the `RECORD` of a `wsgi_fpm-*.dist-info` beside the package
    /// lists `exe`: pip records the script it put in `<prefix>/bin` as a
    /// path relative to `site-packages`.
    fn records(&self, exe: &Path, fs: &dyn Probe) -> bool {
        let dist_prefix = format!("{WHEEL_PACKAGE}-");
        fs.list(&self.site)
            .iter()
            .filter(|name| name.starts_with(&dist_prefix) && name.ends_with(".dist-info"))
            .filter_map(|name| fs.read(&self.site.join(name).join("RECORD")))
            .any(|record| {
                record
                    .lines()
                    .filter_map(record_path)
                    .any(|p| normalize(&self.site.join(p)) == exe)
            })
    }
}

/// `<prefix>/lib/python3*/{site,dist}-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so`
/// that exist, from `lib64` only when `lib` has none: a venv's `lib64` is a
/// link to its `lib`, while Fedora's platform-specific packages (ours is
/// one) are only in `lib64`.
fn wheel_candidates(prefix: &Path, fs: &dyn Probe) -> Vec<Wheel> {
    for lib in ["lib", "lib64"] {
        let lib_dir = prefix.join(lib);
        let mut found = Vec::new();
        for python in fs.list(&lib_dir) {
            // python3.11, python3.13t; Debian's shared /usr/lib/python3.
            let versioned = python
                .strip_prefix("python3.")
                .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()));
            if !(versioned || python == "python3") {
                continue;
            }
            for packages in ["site-packages", "dist-packages"] {
                let site = lib_dir.join(&python).join(packages);
                let module = site.join(WHEEL_PACKAGE).join(WHEEL_MODULE_FILE);
                if fs.is_file(&module) {
                    found.push(Wheel {
                        module,
                        prefix: prefix.to_path_buf(),
                        python: python.clone(),
                        site,
                    });
                }
            }
        }
        if !found.is_empty() {
            return found;
        }
    }
    Vec::new()
}

/// The path field of a `RECORD` line (CSV: quoted when it holds a comma
/// or a quote, a doubled quote standing for one).
fn record_path(line: &str) -> Option<String> {
    let Some(quoted) = line.strip_prefix('"') else {
        return line
            .split(',')
            .next()
            .filter(|p| !p.is_empty())
            .map(str::to_owned);
    };
    let mut out = String::new();
    let mut chars = quoted.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' {
            if chars.peek() == Some(&'"') {
                chars.next();
                out.push('"');
            } else {
                return Some(out);
            }
        } else {
            out.push(c);
        }
    }
    None
}

/// `a/b/../c` → `a/c`, without asking the file system (the executable's
/// path is already free of links, and `site` derives from it).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Files by path: whether executable, and contents.
    #[derive(Default)]
    struct Fake(BTreeMap<PathBuf, (bool, String)>);

    impl Fake {
        fn new(files: &[&str]) -> Fake {
            let mut fake = Fake::default();
            for f in files {
                fake.add(f, false, "");
            }
            fake
        }
        fn add(&mut self, path: &str, exec: bool, text: &str) {
            self.0.insert(PathBuf::from(path), (exec, text.to_owned()));
        }
    }

    impl Probe for Fake {
        fn is_file(&self, path: &Path) -> bool {
            self.0.contains_key(path)
        }
        fn is_executable(&self, path: &Path) -> bool {
            self.0.get(path).is_some_and(|(exec, _)| *exec)
        }
        fn list(&self, dir: &Path) -> Vec<String> {
            let mut names: Vec<String> = self
                .0
                .keys()
                .filter_map(|p| p.strip_prefix(dir).ok()?.components().next())
                .filter_map(|c| c.as_os_str().to_str().map(str::to_owned))
                .collect();
            names.sort();
            names.dedup();
            names
        }
        fn read(&self, path: &Path) -> Option<String> {
            self.0.get(path).map(|(_, text)| text.clone())
        }
    }

    const VENV_MODULE: &str =
        "/opt/venv/lib/python3.11/site-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so";

    fn wheel(module: &str, prefix: &str, python: &str) -> Result<Found, String> {
        Ok(Found::Wheel {
            module: module.into(),
            prefix: prefix.into(),
            python: python.into(),
        })
    }

    #[test]
    fn every_layout_finds_its_module() {
        let record_311 = "wsgi_fpm/__init__.py,sha256=x,1\n../../../bin/wsgi-fpm,sha256=y,2\n";
        #[allow(clippy::type_complexity)]
        let table: Vec<(&str, Option<&str>, &str, Vec<&str>, Vec<(&str, &str)>, Result<Found, String>)> = vec![
            (
                "the environment wins, even over a module beside the executable",
                Some("/elsewhere/w.so"),
                "/src/target/release/wsgi-fpm",
                vec!["/src/target/release/libwsgi_fpm_worker.so"],
                vec![],
                Ok(Found::Env("/elsewhere/w.so".into())),
            ),
            (
                "an empty variable is no setting",
                Some(""),
                "/src/target/release/wsgi-fpm",
                vec!["/src/target/release/libwsgi_fpm_worker.so"],
                vec![],
                Ok(Found::BesideExe("/src/target/release/libwsgi_fpm_worker.so".into())),
            ),
            (
                "cargo build",
                None,
                "/src/target/release/wsgi-fpm",
                vec!["/src/target/release/libwsgi_fpm_worker.so"],
                vec![],
                Ok(Found::BesideExe("/src/target/release/libwsgi_fpm_worker.so".into())),
            ),
            (
                "Debian package",
                None,
                "/usr/bin/wsgi-fpm",
                vec!["/usr/lib/wsgi-fpm/libwsgi_fpm_worker.so"],
                vec![],
                Ok(Found::SystemLib("/usr/lib/wsgi-fpm/libwsgi_fpm_worker.so".into())),
            ),
            (
                "the system package's module wins over a wheel in the same prefix",
                None,
                "/usr/bin/wsgi-fpm",
                vec![
                    "/usr/lib/wsgi-fpm/libwsgi_fpm_worker.so",
                    "/usr/lib/python3/dist-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so",
                ],
                vec![],
                Ok(Found::SystemLib("/usr/lib/wsgi-fpm/libwsgi_fpm_worker.so".into())),
            ),
            (
                "venv (its lib64 is a link to lib: found once)",
                None,
                "/opt/venv/bin/wsgi-fpm",
                vec![
                    VENV_MODULE,
                    "/opt/venv/lib64/python3.11/site-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so",
                ],
                vec![],
                wheel(VENV_MODULE, "/opt/venv", "python3.11"),
            ),
            (
                "pipx: the link in ~/.local/bin resolves into pipx's venv",
                None,
                "/root/.local/share/pipx/venvs/wsgi-fpm/bin/wsgi-fpm",
                vec!["/root/.local/share/pipx/venvs/wsgi-fpm/lib/python3.12/site-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so"],
                vec![],
                wheel(
                    "/root/.local/share/pipx/venvs/wsgi-fpm/lib/python3.12/site-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so",
                    "/root/.local/share/pipx/venvs/wsgi-fpm",
                    "python3.12",
                ),
            ),
            (
                "pip install --user",
                None,
                "/home/u/.local/bin/wsgi-fpm",
                vec!["/home/u/.local/lib/python3.9/site-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so"],
                vec![],
                wheel(
                    "/home/u/.local/lib/python3.9/site-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so",
                    "/home/u/.local",
                    "python3.9",
                ),
            ),
            (
                "Debian's python, pip as root: /usr/local and dist-packages",
                None,
                "/usr/local/bin/wsgi-fpm",
                vec!["/usr/local/lib/python3.11/dist-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so"],
                vec![],
                wheel(
                    "/usr/local/lib/python3.11/dist-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so",
                    "/usr/local",
                    "python3.11",
                ),
            ),
            (
                "Fedora: platform packages in lib64 only; other dirs in lib ignored",
                None,
                "/usr/local/bin/wsgi-fpm",
                vec![
                    "/usr/local/lib/pkgconfig/x.pc",
                    "/usr/local/lib/python3.12/site-packages/other/x.py",
                    "/usr/local/lib64/python3.12/site-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so",
                ],
                vec![],
                wheel(
                    "/usr/local/lib64/python3.12/site-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so",
                    "/usr/local",
                    "python3.12",
                ),
            ),
            (
                "free-threaded build's lib directory",
                None,
                "/opt/py/bin/wsgi-fpm",
                vec!["/opt/py/lib/python3.13t/site-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so"],
                vec![],
                wheel(
                    "/opt/py/lib/python3.13t/site-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so",
                    "/opt/py",
                    "python3.13t",
                ),
            ),
            (
                "two Pythons of one prefix: the one whose RECORD lists this executable",
                None,
                "/usr/local/bin/wsgi-fpm",
                vec![
                    "/usr/local/lib/python3.11/dist-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so",
                    "/usr/local/lib/python3.12/dist-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so",
                ],
                vec![
                    ("/usr/local/lib/python3.11/dist-packages/wsgi_fpm-0.1.0.dist-info/RECORD", record_311),
                    ("/usr/local/lib/python3.12/dist-packages/wsgi_fpm-0.0.9.dist-info/RECORD", "wsgi_fpm/__init__.py,,\n../../../sbin/wsgi-fpm,,\n"),
                ],
                wheel(
                    "/usr/local/lib/python3.11/dist-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so",
                    "/usr/local",
                    "python3.11",
                ),
            ),
            (
                "a quoted RECORD path",
                None,
                "/o,p/bin/wsgi-fpm",
                vec![
                    "/o,p/lib/python3.11/site-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so",
                    "/o,p/lib/python3.12/site-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so",
                ],
                vec![("/o,p/lib/python3.12/site-packages/wsgi_fpm-0.1.0.dist-info/RECORD", "\"../../../bin/wsgi-fpm\",sha256=y,2\n")],
                wheel(
                    "/o,p/lib/python3.12/site-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so",
                    "/o,p",
                    "python3.12",
                ),
            ),
        ];
        for (what, env, exe, files, texts, want) in table {
            let mut fs = Fake::new(&files);
            for (path, text) in texts {
                fs.add(path, false, text);
            }
            let got = locate(env.map(OsStr::new), Path::new(exe), &fs);
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn what_is_not_found_is_said() {
        let table: Vec<(&str, &str, Vec<&str>, Vec<&str>)> = vec![
            (
                "nothing anywhere: every place looked at, and the variable",
                "/opt/x/bin/wsgi-fpm",
                vec!["/opt/x/lib/python3.11/site-packages/other/m.so"],
                vec![
                    "/opt/x/bin/libwsgi_fpm_worker.so",
                    "/opt/x/lib/wsgi-fpm/libwsgi_fpm_worker.so",
                    "/opt/x/lib*/python3.*/{site,dist}-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so",
                    "WSGI_FPM_WORKER_MODULE",
                ],
            ),
            (
                "two Pythons, neither RECORD lists the executable: both named",
                "/usr/local/bin/wsgi-fpm",
                vec![
                    "/usr/local/lib/python3.11/dist-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so",
                    "/usr/local/lib/python3.12/dist-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so",
                ],
                vec![
                    "python3.11/dist-packages/wsgi_fpm",
                    "python3.12/dist-packages/wsgi_fpm",
                    "WSGI_FPM_WORKER_MODULE",
                ],
            ),
            (
                "a module in python2's lib is not ours; a module beside the package is not it",
                "/opt/x/bin/wsgi-fpm",
                vec![
                    "/opt/x/lib/python2.7/site-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so",
                    "/opt/x/lib/python3.11/site-packages/wsgi_fpm_worker.abi3.so",
                ],
                vec!["worker module not found"],
            ),
            (
                "an executable at the root",
                "/wsgi-fpm",
                vec![],
                vec!["/libwsgi_fpm_worker.so"],
            ),
            (
                "no directory at all",
                "",
                vec![],
                vec!["WSGI_FPM_WORKER_MODULE"],
            ),
        ];
        for (what, exe, files, said) in table {
            let err = locate(None, Path::new(exe), &Fake::new(&files)).unwrap_err();
            for s in said {
                assert!(err.contains(s), "{what}: `{s}` not in: {err}");
            }
        }
    }

    #[test]
    fn the_installed_python_is_the_one_beside_a_wheel_install() {
        let mut fs = Fake::new(&[VENV_MODULE]);
        fs.add("/opt/venv/bin/python3.11", true, "");
        let venv = locate(None, Path::new("/opt/venv/bin/wsgi-fpm"), &fs).unwrap();
        assert_eq!(
            python_of(&venv, &fs),
            Some("/opt/venv/bin/python3.11".into())
        );

        // pip --user into ~/.local, or as root into /usr/local: that
        // Python lives elsewhere; the default falls through to PATH.
        let user = Fake::new(&[
            "/home/u/.local/lib/python3.11/site-packages/wsgi_fpm/wsgi_fpm_worker.abi3.so",
        ]);
        let found = locate(None, Path::new("/home/u/.local/bin/wsgi-fpm"), &user).unwrap();
        assert_eq!(python_of(&found, &user), None);

        // Not executable: not an interpreter.
        let mut fs = Fake::new(&[VENV_MODULE]);
        fs.add("/opt/venv/bin/python3.11", false, "");
        let venv = locate(None, Path::new("/opt/venv/bin/wsgi-fpm"), &fs).unwrap();
        assert_eq!(python_of(&venv, &fs), None);

        // A cargo build or a system package names no interpreter.
        for (exe, module) in [
            (
                "/src/target/release/wsgi-fpm",
                "/src/target/release/libwsgi_fpm_worker.so",
            ),
            (
                "/usr/bin/wsgi-fpm",
                "/usr/lib/wsgi-fpm/libwsgi_fpm_worker.so",
            ),
        ] {
            let mut fs = Fake::new(&[module]);
            fs.add("/usr/bin/python3", true, "");
            fs.add("/src/target/release/python3", true, "");
            let found = locate(None, Path::new(exe), &fs).unwrap();
            assert_eq!(python_of(&found, &fs), None, "{exe}");
        }
    }

    #[test]
    fn record_paths_and_normalizing() {
        assert_eq!(record_path("a/b.py,sha256=x,3").as_deref(), Some("a/b.py"));
        assert_eq!(
            record_path("\"a,\"\"b\",sha256=x,3").as_deref(),
            Some("a,\"b")
        );
        assert_eq!(record_path("\"unterminated"), None);
        assert_eq!(record_path(""), None);
        assert_eq!(
            normalize(Path::new(
                "/p/lib/python3.11/site-packages/../../../bin/./wsgi-fpm"
            )),
            Path::new("/p/bin/wsgi-fpm")
        );
    }

    /// The real probe, on a real venv-like tree with a lib64 link.
    #[test]
    fn the_disk_probe_sees_a_real_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let site = root.join("lib/python3.11/site-packages");
        std::fs::create_dir_all(site.join("wsgi_fpm")).unwrap();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(site.join("wsgi_fpm").join(WHEEL_MODULE_FILE), b"").unwrap();
        std::os::unix::fs::symlink("lib", root.join("lib64")).unwrap();
        let python = root.join("bin/python3.11");
        std::fs::write(&python, b"").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
        let found = locate(None, &root.join("bin/wsgi-fpm"), &Disk).unwrap();
        assert_eq!(
            found.module(),
            site.join("wsgi_fpm").join(WHEEL_MODULE_FILE)
        );
        assert_eq!(python_of(&found, &Disk), Some(python));
    }
}
