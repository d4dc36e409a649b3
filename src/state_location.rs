//! Where a command's state file is (SPEC §4, v1.1): `--state PATH`, else `$FLEETCTL_STATE`,
//! else one file per fleet under the user's state directory,
//! `$XDG_STATE_HOME/fleetctl/<fleet>.db` (`$HOME/.local/state/fleetctl/<fleet>.db` when
//! `XDG_STATE_HOME` is unset, empty or relative). The current directory plays no part.
//!
//! The resolver is pure over the values it is given ([`StateLocation`]); only
//! [`StateLocation::from_env`] reads the process environment and only
//! [`StateLocation::for_any_fleet`] reads the state directory.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// Extension of a fleet's state file in the state directory.
pub const STATE_EXTENSION: &str = "db";

/// Why no state file could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum StateLocationError {
    /// Neither `XDG_STATE_HOME` (absolute) nor `HOME` is set.
    #[error(
        "cannot tell where the state file lives: neither XDG_STATE_HOME nor HOME is set; pass --state PATH or set FLEETCTL_STATE"
    )]
    NoStateDir,
    /// The state directory exists but cannot be listed.
    #[error("cannot list the state directory {dir}")]
    ListDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No fleet was named and the state directory holds the state of several fleets.
    #[error(
        "the state directory {dir} holds several fleets ({}); pass the fleet's manifests (PATH or -f PATH) or --state PATH",
        fleets.join(", ")
    )]
    SeveralFleets {
        /// The directory.
        dir: PathBuf,
        /// The fleets found, sorted.
        fleets: Vec<String>,
    },
}

/// What the state file's location depends on: the command line and three environment
/// variables. Empty values count as unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateLocation {
    /// `--state PATH`.
    pub explicit: Option<PathBuf>,
    /// `$FLEETCTL_STATE`.
    pub env_state: Option<OsString>,
    /// `$XDG_STATE_HOME`.
    pub xdg_state_home: Option<OsString>,
    /// `$HOME`.
    pub home: Option<OsString>,
}

fn set(v: Option<&OsStr>) -> Option<&OsStr> {
    v.filter(|v| !v.is_empty())
}

impl StateLocation {
    /// The location for `explicit` (`--state`) with `FLEETCTL_STATE`, `XDG_STATE_HOME` and
    /// `HOME` read from the process environment.
    pub fn from_env(explicit: Option<&Path>) -> Self {
        StateLocation {
            explicit: explicit.map(Path::to_path_buf),
            env_state: std::env::var_os("FLEETCTL_STATE"),
            xdg_state_home: std::env::var_os("XDG_STATE_HOME"),
            home: std::env::var_os("HOME"),
        }
    }

    /// The state file the user chose (`--state`, else `$FLEETCTL_STATE`), if any.
    pub fn chosen(&self) -> Option<PathBuf> {
        self.explicit
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .or_else(|| set(self.env_state.as_deref()).map(PathBuf::from))
    }

    /// The directory holding one state file per fleet: `$XDG_STATE_HOME/fleetctl` when that is
    /// set and absolute (the XDG rule: a relative value is ignored), else
    /// `$HOME/.local/state/fleetctl`.
    ///
    /// # Errors
    /// [`StateLocationError::NoStateDir`] when neither is usable.
    pub fn dir(&self) -> Result<PathBuf, StateLocationError> {
        if let Some(x) = set(self.xdg_state_home.as_deref())
            && Path::new(x).is_absolute()
        {
            return Ok(Path::new(x).join("fleetctl"));
        }
        set(self.home.as_deref())
            .map(|h| Path::new(h).join(".local/state/fleetctl"))
            .ok_or(StateLocationError::NoStateDir)
    }

    /// The state file of `fleet` (a validated fleet name: lowercase letters, digits and `-`):
    /// the chosen file when there is one, else `<state dir>/<fleet>.db`.
    ///
    /// # Errors
    /// No file chosen and no state directory ([`Self::dir`]).
    pub fn for_fleet(&self, fleet: &str) -> Result<PathBuf, StateLocationError> {
        match self.chosen() {
            Some(p) => Ok(p),
            None => Ok(self.dir()?.join(format!("{fleet}.{STATE_EXTENSION}"))),
        }
    }

    /// The state file of a command that does not know its fleet (it was given no manifests):
    /// the chosen file when there is one (existing or not); else the only `<fleet>.db` in the
    /// state directory; `None` when the directory holds none (or does not exist).
    ///
    /// # Errors
    /// Several fleets' files in the directory ([`StateLocationError::SeveralFleets`], naming
    /// them), the directory cannot be listed, or there is no state directory.
    pub fn for_any_fleet(&self) -> Result<Option<PathBuf>, StateLocationError> {
        if let Some(p) = self.chosen() {
            return Ok(Some(p));
        }
        let dir = self.dir()?;
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateLocationError::ListDir { dir, source }),
        };
        let mut fleets = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| StateLocationError::ListDir {
                dir: dir.clone(),
                source,
            })?;
            let path = entry.path();
            if path.extension() == Some(OsStr::new(STATE_EXTENSION))
                && path.is_file()
                && let Some(stem) = path.file_stem().and_then(OsStr::to_str)
            {
                fleets.push(stem.to_string());
            }
        }
        fleets.sort();
        match fleets.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(dir.join(format!("{one}.{STATE_EXTENSION}")))),
            _ => Err(StateLocationError::SeveralFleets { dir, fleets }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(
        explicit: Option<&str>,
        env: Option<&str>,
        xdg: Option<&str>,
        home: Option<&str>,
    ) -> StateLocation {
        StateLocation {
            explicit: explicit.map(PathBuf::from),
            env_state: env.map(OsString::from),
            xdg_state_home: xdg.map(OsString::from),
            home: home.map(OsString::from),
        }
    }

    #[test]
    fn explicit_wins_over_env_and_env_over_the_state_dir() {
        let all = loc(Some("/a/s.db"), Some("/b/s.db"), Some("/x"), Some("/h"));
        assert_eq!(all.for_fleet("aims").unwrap(), PathBuf::from("/a/s.db"));
        assert_eq!(all.for_any_fleet().unwrap(), Some(PathBuf::from("/a/s.db")));
        let env = loc(None, Some("/b/s.db"), Some("/x"), Some("/h"));
        assert_eq!(env.for_fleet("aims").unwrap(), PathBuf::from("/b/s.db"));
        // A relative path is taken as given (relative to the current directory).
        let rel = loc(Some("s.db"), None, None, None);
        assert_eq!(rel.for_fleet("aims").unwrap(), PathBuf::from("s.db"));
        // Empty values count as unset.
        let empty = loc(Some(""), Some(""), Some("/x"), None);
        assert_eq!(
            empty.for_fleet("aims").unwrap(),
            PathBuf::from("/x/fleetctl/aims.db")
        );
    }

    #[test]
    fn the_state_dir_is_xdg_state_home_else_home_local_state() {
        let xdg = loc(None, None, Some("/x"), Some("/h"));
        assert_eq!(
            xdg.for_fleet("aims").unwrap(),
            PathBuf::from("/x/fleetctl/aims.db")
        );
        for bad in [None, Some(""), Some("relative/dir")] {
            let home = loc(None, None, bad, Some("/h"));
            assert_eq!(
                home.for_fleet("aims").unwrap(),
                PathBuf::from("/h/.local/state/fleetctl/aims.db"),
                "XDG_STATE_HOME={bad:?}"
            );
        }
        let none = loc(None, None, Some("rel"), Some(""));
        assert!(matches!(
            none.for_fleet("aims"),
            Err(StateLocationError::NoStateDir)
        ));
        // A chosen file needs no state directory.
        let chosen = loc(None, Some("/b/s.db"), None, None);
        assert_eq!(chosen.for_fleet("aims").unwrap(), PathBuf::from("/b/s.db"));
    }

    #[test]
    fn without_a_fleet_the_only_fleet_in_the_state_dir_is_used() {
        let x = tempfile::tempdir().unwrap();
        let l = loc(None, None, x.path().to_str(), None);
        let dir = x.path().join("fleetctl");
        // No directory yet, then an empty one.
        assert_eq!(l.for_any_fleet().unwrap(), None);
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(l.for_any_fleet().unwrap(), None);
        // Files that are not a fleet's state do not count.
        std::fs::write(dir.join("aims.api-token"), "t").unwrap();
        std::fs::write(dir.join("aims.db-wal"), "").unwrap();
        std::fs::create_dir(dir.join("dir.db")).unwrap();
        assert_eq!(l.for_any_fleet().unwrap(), None);
        std::fs::write(dir.join("aims.db"), "").unwrap();
        assert_eq!(l.for_any_fleet().unwrap(), Some(dir.join("aims.db")));
        std::fs::write(dir.join("blog.db"), "").unwrap();
        match l.for_any_fleet() {
            Err(e @ StateLocationError::SeveralFleets { .. }) => {
                let text = e.to_string();
                assert!(text.contains("(aims, blog)"), "{text}");
                assert!(text.contains("--state"), "{text}");
                assert!(text.contains(&dir.display().to_string()), "{text}");
            }
            other => panic!("{other:?}"),
        }
        // A chosen file still wins, and a named fleet gets its own file.
        let chosen = loc(Some("/a/s.db"), None, x.path().to_str(), None);
        assert_eq!(
            chosen.for_any_fleet().unwrap(),
            Some(PathBuf::from("/a/s.db"))
        );
        assert_eq!(l.for_fleet("blog").unwrap(), dir.join("blog.db"));
    }
}
