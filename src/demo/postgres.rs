//! A throwaway PostgreSQL server for `walhook demo`: the installed server
//! programs, a fresh data directory in a temporary directory, a free port
//! on 127.0.0.1, logical replication on. Stopped and removed on drop.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use thiserror::Error;
use tracing::{debug, warn};

/// What to install when no server programs exist.
pub const INSTALL_HINT: &str = "  Debian, Ubuntu:  sudo apt-get install postgresql\n  \
     macOS:           brew install postgresql@16\n  \
     Fedora, RHEL:    sudo dnf install postgresql-server\n\
     or run the demo against a database you already have: DATABASE_URL=postgres://user@host/db walhook demo";

#[derive(Debug, Error)]
pub enum PostgresError {
    #[error(
        "walhook demo starts a throwaway PostgreSQL and needs its server programs (initdb, pg_ctl, postgres), \
         but found none in {searched}. Install them:\n{INSTALL_HINT}"
    )]
    NotInstalled { searched: String },
    #[error("cannot prepare the throwaway database directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("running as root, and PostgreSQL refuses to run as root; neither the user postgres nor nobody exists to run it as (run the demo as an ordinary user)")]
    NoUnprivilegedUser,
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("{program} failed ({status}):\n{output}")]
    Failed {
        program: String,
        status: String,
        output: String,
    },
    #[error("cannot find a free port on 127.0.0.1: {0}")]
    Port(std::io::Error),
}

/// A directory holding `initdb`, `pg_ctl` and `postgres`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerBinaries {
    pub dir: PathBuf,
}

impl ServerBinaries {
    fn program(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn complete(dir: &Path) -> bool {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|name| dir.join(name).is_file())
    }
}

/// Finds the server programs: the newest of the versioned installs
/// (Debian's /usr/lib/postgresql/N, PGDG's /usr/pgsql-N, Homebrew's
/// postgresql@N), then `pg_config --bindir`, then `PATH`.
pub fn find_server_binaries() -> Result<ServerBinaries, PostgresError> {
    let versioned = [
        ("/usr/lib/postgresql", ""),
        ("/usr", "pgsql-"),
        ("/opt/homebrew/opt", "postgresql@"),
        ("/usr/local/opt", "postgresql@"),
    ];
    let pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    find_in(&versioned, pg_config, std::env::var_os("PATH"))
}

fn find_in(
    versioned: &[(&str, &str)],
    pg_config_bindir: Option<PathBuf>,
    path: Option<OsString>,
) -> Result<ServerBinaries, PostgresError> {
    let mut installs: Vec<(Vec<u32>, PathBuf)> = Vec::new();
    for (parent, prefix) in versioned {
        let Ok(entries) = std::fs::read_dir(parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(version) = name.strip_prefix(prefix) else {
                continue;
            };
            let Ok(version) = version
                .split('.')
                .map(str::parse::<u32>)
                .collect::<Result<Vec<_>, _>>()
            else {
                continue;
            };
            installs.push((version, entry.path().join("bin")));
        }
    }
    installs.sort_by(|a, b| b.0.cmp(&a.0));
    let candidates = installs
        .into_iter()
        .map(|(_, dir)| dir)
        .chain(pg_config_bindir)
        .chain(path.iter().flat_map(std::env::split_paths));
    for dir in candidates {
        if ServerBinaries::complete(&dir) {
            return Ok(ServerBinaries { dir });
        }
    }
    let mut searched: Vec<String> = versioned
        .iter()
        .map(|(parent, prefix)| format!("{parent}/{prefix}*/bin"))
        .collect();
    searched.push("`pg_config --bindir`".into());
    searched.push("PATH".into());
    Err(PostgresError::NotInstalled {
        searched: searched.join(", "),
    })
}

/// The operating-system user the server runs as.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

/// `/etc/passwd`'s uid and gid of `name`.
fn passwd_entry(passwd: &str, name: &str) -> Option<RunAs> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(RunAs { uid, gid })
    })
}

/// A running throwaway server. Dropping it stops the server and removes
/// its directory.
#[derive(Debug)]
pub struct ThrowawayPostgres {
    binaries: ServerBinaries,
    dir: PathBuf,
    run_as: Option<RunAs>,
    port: u16,
    running: bool,
}

impl ThrowawayPostgres {
    /// Creates the data directory, starts the server and waits until it
    /// accepts connections. Blocking: call it from a blocking task.
    pub fn start(binaries: ServerBinaries) -> Result<ThrowawayPostgres, PostgresError> {
        let dir = std::env::temp_dir().join(format!(
            "{DIR_PREFIX}{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let dir_error = |source| PostgresError::Dir {
            path: dir.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(dir_error)?;
        // From here on, dropping `server` removes the directory.
        let mut server = ThrowawayPostgres {
            binaries,
            dir: dir.clone(),
            run_as: None,
            port: 0,
            running: false,
        };

        // The directory belongs to whoever we run as; PostgreSQL refuses
        // to run as root, so then it runs as postgres (or nobody).
        let owner = std::fs::metadata(&dir).map_err(dir_error)?.uid();
        if owner == 0 {
            let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            let run_as = passwd_entry(&passwd, "postgres")
                .or_else(|| passwd_entry(&passwd, "nobody"))
                .ok_or(PostgresError::NoUnprivilegedUser)?;
            std::os::unix::fs::chown(&dir, Some(run_as.uid), Some(run_as.gid))
                .map_err(dir_error)?;
            server.run_as = Some(run_as);
        }

        let data = dir.join("data");
        let initdb = [
            "-D".as_ref(),
            data.as_os_str(),
            "-U".as_ref(),
            "postgres".as_ref(),
            "--auth=trust".as_ref(),
            "--encoding=UTF8".as_ref(),
            "--no-locale".as_ref(),
            "--no-sync".as_ref(),
        ];
        server.run("initdb", &initdb)?;

        server.port = free_port()?;
        let mut settings = String::from("\n# walhook demo\n");
        let socket_dir = dir.to_string_lossy().replace('\'', "''");
        let _ = write!(
            settings,
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{socket_dir}'\n\
             wal_level = logical\nmax_replication_slots = 4\nmax_wal_senders = 4\n\
             track_commit_timestamp = on\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n",
            server.port
        );
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(dir_error)?;
        text.push_str(&settings);
        std::fs::write(&conf, text).map_err(dir_error)?;

        let log = dir.join("server.log");
        let start = [
            "-D".as_ref(),
            data.as_os_str(),
            "-l".as_ref(),
            log.as_os_str(),
            "-w".as_ref(),
            "-t".as_ref(),
            "60".as_ref(),
            "start".as_ref(),
        ];
        server.running = true;
        if let Err(error) = server.run("pg_ctl", &start) {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(PostgresError::Failed {
                program: "pg_ctl start".into(),
                status: error.to_string(),
                output: tail.join("\n"),
            });
        }
        debug!(dir = %dir.display(), port = server.port, "throwaway postgres started");
        Ok(server)
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The temporary directory holding the data, the socket and the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `pg_ctl restart -m <mode>` (`smart`, `fast` or `immediate`), waiting
    /// at most `timeout_s` seconds for the server to stop and start again.
    /// Blocking.
    pub fn restart(&self, mode: &str, timeout_s: u32) -> Result<(), PostgresError> {
        self.pg_ctl(&["-m", mode, "-t", &timeout_s.to_string(), "restart"])
    }

    /// Stops the server (`pg_ctl stop -m <mode>`) but keeps its directory,
    /// for [`ThrowawayPostgres::start_again`]. Blocking.
    pub fn halt(&self, mode: &str) -> Result<(), PostgresError> {
        self.pg_ctl(&["-m", mode, "-t", "60", "stop"])
    }

    /// Starts a server stopped by [`ThrowawayPostgres::halt`]. Blocking.
    pub fn start_again(&self) -> Result<(), PostgresError> {
        self.pg_ctl(&["-t", "60", "start"])
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), PostgresError> {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        let mut all: Vec<&std::ffi::OsStr> = vec![
            "-D".as_ref(),
            data.as_os_str(),
            "-l".as_ref(),
            log.as_os_str(),
            "-w".as_ref(),
        ];
        all.extend(args.iter().map(|a| std::ffi::OsStr::new(*a)));
        self.run("pg_ctl", &all).map(|_| ())
    }

    /// Stops the server and removes its directory; safe to call twice.
    /// Blocking. Connections still closing (a stopped relay's) get a few
    /// seconds to end on their own (smart shutdown), so none is cut off
    /// and logs an error; then whatever remains is ended (fast shutdown).
    pub fn stop(&mut self) {
        if self.running {
            self.running = false;
            let data = self.dir.join("data");
            let stop = |mode: &str, seconds: &str| {
                let args = [
                    "-D".as_ref(),
                    data.as_os_str(),
                    "-m".as_ref(),
                    mode.as_ref(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    seconds.as_ref(),
                    "stop".as_ref(),
                ];
                self.run("pg_ctl", &args)
            };
            if stop("smart", "3").is_err() {
                if let Err(error) = stop("fast", "60") {
                    warn!(%error, "could not stop the throwaway postgres");
                }
            }
        }
        if self.dir.exists() {
            if let Err(error) = std::fs::remove_dir_all(&self.dir) {
                warn!(%error, dir = %self.dir.display(), "could not remove the throwaway database directory");
            }
        }
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<Output, PostgresError> {
        let path = self.binaries.program(program);
        let mut command = Command::new(&path);
        command
            .args(args)
            .current_dir(&self.dir)
            .env("LC_ALL", "C")
            .env_remove("PGDATA");
        // Its own process group: the terminal's Ctrl-C reaches walhook,
        // which then stops the server in order.
        command.process_group(0);
        if let Some(user) = self.run_as {
            command.uid(user.uid).gid(user.gid);
        }
        let output = command.output().map_err(|source| PostgresError::Spawn {
            program: path.clone(),
            source,
        })?;
        if !output.status.success() {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            return Err(PostgresError::Failed {
                program: format!(
                    "{program} {}",
                    args.last().map(|a| a.to_string_lossy()).unwrap_or_default()
                ),
                status: output.status.to_string(),
                output: text.trim().to_owned(),
            });
        }
        Ok(output)
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The prefix of every throwaway directory, followed by the demo's process
/// id: what a killed demo left is found by it.
const DIR_PREFIX: &str = "walhook-demo-";

/// Stops the servers and removes the directories that demos killed before
/// they could clean up left in the temporary directory; returns the
/// directories removed. A directory whose demo still runs is left alone.
pub fn remove_leftovers() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = demo_pid(&name.to_string_lossy()) else {
            continue;
        };
        if owner == std::process::id() || process_alive(owner) != Some(false) {
            continue;
        }
        let dir = entry.path();
        stop_orphaned_server(&dir);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => removed.push(dir),
            Err(error) => {
                warn!(%error, dir = %dir.display(), "could not remove a killed demo's directory")
            }
        }
    }
    removed
}

/// The demo process id in a throwaway directory's name.
fn demo_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(DIR_PREFIX)?;
    let (pid, suffix) = rest.split_once('-')?;
    if suffix.len() != 8 || !suffix.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether a process runs; `None` when this system cannot tell (no
/// `/proc`), so nothing is removed on a guess. A zombie (killed, not yet
/// reaped by its parent) does not run.
fn process_alive(pid: u32) -> Option<bool> {
    if !Path::new("/proc/self").exists() {
        return None;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Some(false);
    };
    // `pid (command) state ...`: the command may hold spaces and parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    Some(state != Some("Z") && state != Some("X"))
}

/// Ends the postmaster of a killed demo (immediate shutdown: its data is
/// thrown away anyway) and waits for it to exit.
fn stop_orphaned_server(dir: &Path) {
    let pid_file = dir.join("data").join("postmaster.pid");
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok())
    else {
        return;
    };
    if process_alive(pid) != Some(true) {
        return;
    }
    let _ = Command::new("kill")
        .args(["-QUIT", &pid.to_string()])
        .output();
    for _ in 0..100 {
        if process_alive(pid) != Some(true) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    warn!(pid, dir = %dir.display(), "a killed demo's PostgreSQL did not stop within 10s");
}

fn free_port() -> Result<u16, PostgresError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(PostgresError::Port)?;
    Ok(listener.local_addr().map_err(PostgresError::Port)?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_server_programs_the_error_says_what_to_install() {
        let empty = std::env::temp_dir().join(format!("walhook-empty-{}", std::process::id()));
        let roots = [(empty.to_str().unwrap_or("/nonexistent"), "")];
        let err = find_in(&roots, None, Some(OsString::from("/nonexistent")))
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("apt-get install postgresql"), "{err}");
        assert!(err.contains("brew install postgresql@16"), "{err}");
        assert!(err.contains("dnf install postgresql-server"), "{err}");
        assert!(err.contains("DATABASE_URL"), "{err}");
    }

    #[test]
    fn the_newest_versioned_install_wins() {
        let root = std::env::temp_dir().join(format!(
            "walhook-pgroot-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        for version in ["9.6", "16", "10"] {
            let bin = root.join(version).join("bin");
            std::fs::create_dir_all(&bin).unwrap_or_default();
            for program in ["initdb", "pg_ctl", "postgres"] {
                std::fs::write(bin.join(program), "").unwrap_or_default();
            }
        }
        let found = find_in(&[(root.to_str().unwrap_or_default(), "")], None, None);
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(found.map(|b| b.dir).ok(), Some(root.join("16").join("bin")));
    }

    #[test]
    fn leftover_directories_are_recognized_by_name() {
        assert_eq!(demo_pid("walhook-demo-4242-0badf00d"), Some(4242));
        assert_eq!(demo_pid("walhook-demo-4242-xyz"), None);
        assert_eq!(demo_pid("walhook-empty-4242"), None);
        assert_eq!(demo_pid("walhook-demo-x-0badf00d"), None);
    }

    #[test]
    fn a_killed_demos_directory_is_removed_and_a_live_ones_kept() {
        // No process has an id this large (pid_max is at most 2^22).
        let dead = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-0badf00d", u32::MAX - 7));
        let live = std::env::temp_dir().join(format!("{DIR_PREFIX}1-0badf00d"));
        for dir in [&dead, &live] {
            std::fs::create_dir_all(dir.join("data")).unwrap_or_else(|e| panic!("{e}"));
        }
        let removed = remove_leftovers();
        let dead_gone = !dead.exists();
        let live_kept = live.exists();
        let _ = std::fs::remove_dir_all(&live);
        assert!(dead_gone && removed.contains(&dead), "{removed:?}");
        assert!(live_kept, "process 1 runs: its directory stays");
    }

    #[test]
    fn this_process_runs() {
        assert_eq!(process_alive(std::process::id()), Some(true));
        assert_eq!(process_alive(u32::MAX - 7), Some(false));
    }

    #[test]
    fn passwd_entries_are_read() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\npostgres:x:101:104::/var/lib/postgresql:/bin/bash\n";
        let user = passwd_entry(passwd, "postgres").map(|u| (u.uid, u.gid));
        assert_eq!(user, Some((101, 104)));
        assert!(passwd_entry(passwd, "nobody").is_none());
    }
}
