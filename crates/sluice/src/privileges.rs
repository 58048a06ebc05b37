//! Dropping root once the listening sockets are bound (`server { user "..."; group "..." }`),
//! like nginx's workers: ports below 1024 need root to bind, nothing after that does.
//!
//! glibc's `setuid`/`setgid` change every thread of the process (the runtime's threads
//! already run when this happens), which is why this goes through libc (`nix`) and not
//! the per-thread system calls.

use std::ffi::CString;

use anyhow::{anyhow, bail, Context as _};
use nix::unistd::{self, Gid, Group, Uid, User};

/// Switches the whole process to `user` (and `group`, default: the user's primary group)
/// with the user's supplementary groups. Does nothing when neither is set, or when the
/// process already runs as them (a process started by a binary upgrade inherits them).
/// Returns the user and group it switched to.
pub fn drop_to(user: Option<&str>, group: Option<&str>) -> anyhow::Result<Option<(Uid, Gid)>> {
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let found = match user {
        Some(name) => Some(
            User::from_name(name)
                .with_context(|| format!("looking up user `{name}`"))?
                .ok_or_else(|| anyhow!("server.user: there is no user `{name}` on this system"))?,
        ),
        None => None,
    };
    let gid = match group {
        Some(name) => {
            Group::from_name(name)
                .with_context(|| format!("looking up group `{name}`"))?
                .ok_or_else(|| anyhow!("server.group: there is no group `{name}` on this system"))?
                .gid
        }
        None => found.as_ref().map_or_else(unistd::getgid, |u| u.gid),
    };
    let uid = found.as_ref().map_or_else(unistd::getuid, |u| u.uid);
    if unistd::geteuid() == uid && unistd::getegid() == gid {
        return Ok(None);
    }
    if !unistd::geteuid().is_root() {
        bail!(
            "cannot switch to user {} / group {}: sluice does not run as root (start it as root, or remove `user`/`group` and let the service manager choose the user)",
            user.unwrap_or("-"),
            group.unwrap_or("-")
        );
    }
    match &found {
        Some(u) => {
            let name = CString::new(u.name.as_str()).context("a user name with a NUL byte")?;
            unistd::initgroups(&name, gid).context("setting the supplementary groups")?;
        }
        None => unistd::setgroups(&[gid]).context("setting the supplementary groups")?,
    }
    unistd::setgid(gid).with_context(|| format!("switching to group id {gid}"))?;
    unistd::setuid(uid).with_context(|| format!("switching to user id {uid}"))?;
    if !uid.is_root() && unistd::setuid(Uid::from_raw(0)).is_ok() {
        bail!("root could be regained after switching users: refusing to run");
    }
    Ok(Some((uid, gid)))
}
