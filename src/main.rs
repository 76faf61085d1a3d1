//! The `blobcast` binary: parse flags, bind, serve until Ctrl-C or SIGTERM.

use anyhow::Context;
use blobcast::auth::token::{self, Permissions};
use blobcast::config::{Command, TokenArgs};
use blobcast::Config;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let mut config = Config::parse();
    let open_files = raise_open_file_limit();
    fit_connections_to(open_files, &mut config);
    if let Some(Command::Token(args)) = &config.command {
        return print_token(args);
    }
    config.validate()?;
    // Before binding, so that a missing key file fails before anything listens.
    blobcast::auth::Auth::from_config(&config)?;
    // Before binding, so that a bad certificate fails before anything listens.
    let tls = blobcast::tls::prepare(&config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    // Printed, not logged: scripts and tests read the address from here.
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("blobcast listening on {scheme}://{addr}");
    if let Some(identity) = tls.as_ref().filter(|identity| identity.is_self_signed()) {
        println!(
            "self-signed TLS certificate, SHA-256 fingerprint {}",
            identity.fingerprint()
        );
    }
    blobcast::serve(listener, config, tls, shutdown_signal()).await?;
    Ok(())
}

/// `blobcast token`: prints a signed token for the server's --token-secret-file.
fn print_token(args: &TokenArgs) -> anyhow::Result<()> {
    let permissions = Permissions {
        publish: args.publish.clone(),
        watch: args.watch.clone(),
        admin: args.admin,
    };
    if permissions == Permissions::default() {
        anyhow::bail!("the token would allow nothing: give --publish, --watch or --admin");
    }
    println!("{}", token::mint(&args.secret_file, permissions, args.ttl)?);
    Ok(())
}

/// Descriptors kept for what is not a connection: the listener, recordings, logs.
const SPARE_FILES: u64 = 64;

/// `--max-connections` past the open-file limit would fail at accept with EMFILE, in a
/// loop; lowered to fit, the limit refuses cleanly and says so.
fn fit_connections_to(open_files: Option<u64>, config: &mut Config) {
    let Some(open_files) = open_files else {
        return;
    };
    let fits = open_files.saturating_sub(SPARE_FILES) as usize;
    if config.max_connections > fits {
        log::info!(
            "--max-connections lowered from {} to {fits}: the open-file limit is {open_files} \
             (raise the hard limit, e.g. LimitNOFILE= in systemd, to serve more)",
            config.max_connections
        );
        config.max_connections = fits;
    }
}

/// Every viewer holds two sockets: the soft limit distributions ship (often 1024)
/// would refuse the 512th viewer. The hard limit is ours to take. Returns the limit in
/// force.
fn raise_open_file_limit() -> Option<u64> {
    #[cfg(not(unix))]
    return None;
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return None;
            }
            if limit.rlim_cur >= limit.rlim_max {
                return Some(limit.rlim_cur);
            }
            let before = limit.rlim_cur;
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Some(before);
            }
            log::info!(
                "raised the open-file limit from {before} to {}",
                limit.rlim_max
            );
            Some(limit.rlim_max)
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
