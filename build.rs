//! Gives the build its git commit (`BLOBCAST_GIT_HASH`, for `blobcast_build_info`), or
//! "unknown" outside a git checkout or without git.

fn main() {
    let hash = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BLOBCAST_GIT_HASH={hash}");
    println!("cargo:rerun-if-changed=build.rs");
    // Rebuilt when HEAD moves (a worktree's HEAD is not under ./.git). A path that does
    // not exist would rebuild every time, so only real ones are named.
    for name in ["HEAD", "logs/HEAD"] {
        if let Some(path) = git(&["rev-parse", "--git-path", name]) {
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
}

fn git(args: &[&str]) -> Option<String> {
    std::process::Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}
