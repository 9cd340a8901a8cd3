//! `bulwark serve`: start every configured listener and run until told to stop.

use std::path::Path;
use std::sync::Arc;

use bulwark_config::{Config, LogFormat, Protocol};
use bulwark_server::{Metrics, Server, ServerOptions, termination_signal};
use tracing_subscriber::EnvFilter;

use crate::CmdResult;
use crate::admin::open_directory;

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_new(&config.log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second subscriber (tests calling serve twice) is not an error worth failing for.
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub fn serve(config_path: &Path) -> CmdResult {
    let config = Config::load(config_path)?;
    init_logging(&config);
    let directory = open_directory(&config)?;
    let tls = match (&config.tls.certificate, &config.tls.private_key) {
        (Some(cert), Some(key)) => Some(bulwark_server::tls::load_server_config(cert, key)?),
        _ => None,
    };
    let metrics = Arc::new(Metrics::new());
    let mut server = Server::new(ServerOptions::from_config(&config), tls, metrics);
    let store = directory.store().clone();
    server.set_health_check(Arc::new(move || {
        store.domains().map(|_| ()).map_err(|e| e.to_string())
    }));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let bound = server.bind(&config.listeners).await?;
        let addrs = bound.local_addrs();
        println!(
            "Bulwark {} serving {}",
            env!("CARGO_PKG_VERSION"),
            config.server.hostname
        );
        for (protocol, addr) in &addrs {
            let what = match protocol {
                Protocol::Admin => "admin (GET /health, /metrics)",
                other => other.name(),
            };
            println!("  {what:<32} {addr}");
        }
        let unserved: Vec<&str> = config
            .listeners
            .iter()
            .filter(|l| !addrs.iter().any(|(p, _)| *p == l.protocol))
            .map(|l| l.protocol.name())
            .collect();
        if !unserved.is_empty() {
            println!("  not available in this build yet: {}", unserved.join(", "));
        }
        println!("Stop with Ctrl-C or SIGTERM.");
        tracing::info!(listeners = addrs.len(), "serving");
        bound.serve(termination_signal()).await;
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    // Dropping the directory closes the store: the writer finishes every
    // queued write before the process exits.
    drop(directory);
    tracing::info!("stopped");
    Ok(())
}
