//! The nginx sink: an nginx child process that answers every POST with 204 (reading and
//! discarding the body, checking nothing) and echoes `hub.challenge` on GET, so a hub can
//! subscribe callbacks on it. It listens on one port on each destination address. Its config,
//! pid file, logs and temp paths live in a temporary directory; it runs in its own process
//! group, which is terminated (then killed) when the sink stops or is dropped.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::programs;

/// How long nginx gets to accept connections, and to exit when asked.
const START_LIMIT: Duration = Duration::from_secs(10);
const STOP_LIMIT: Duration = Duration::from_secs(5);

pub struct NginxSink {
    pub addrs: Vec<SocketAddr>,
    child: Option<Child>,
    /// The process group nginx leads (its master's pid): master and workers.
    pgid: u32,
    dir: tempfile::TempDir,
}

/// What `nginx -V` says about the installed build.
struct Build {
    /// `-e <error log>` (1.19.5 and later): no attempt to open the compiled-in error log.
    error_log_flag: bool,
    /// Modules whose temp path directive exists (the others were configured out).
    temp_modules: Vec<&'static str>,
}

pub fn find() -> Option<PathBuf> {
    programs::find("nginx")
}

impl NginxSink {
    /// Starts nginx listening on `ips`, all on one free port.
    pub async fn start(ips: &[IpAddr]) -> anyhow::Result<NginxSink> {
        let bin = find()
            .context("nginx is not installed (looked on PATH and in the sbin directories)")?;
        let build = probe(&bin).await?;
        let mut last = None;
        // A port found free can be taken before nginx binds it: a few attempts.
        for _ in 0..3 {
            let port = free_port(ips).context("no free port for the nginx sink")?;
            match spawn(&bin, &build, ips, port).await {
                Ok(sink) => return Ok(sink),
                Err(e) if format!("{e:#}").contains("Address already in use") => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    pub fn port(&self) -> u16 {
        self.addrs[0].port()
    }

    /// The config nginx runs on (for the report).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("nginx.conf")
    }

    /// SIGTERM to the group, then SIGKILL if it has not exited in time.
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            signal_group(self.pgid, "TERM");
            if tokio::time::timeout(STOP_LIMIT, child.wait())
                .await
                .is_err()
            {
                signal_group(self.pgid, "KILL");
                let _ = tokio::time::timeout(STOP_LIMIT, child.wait()).await;
            }
            // Workers exit with the master on TERM; make sure none is left behind.
            signal_group(self.pgid, "KILL");
        }
    }
}

impl Drop for NginxSink {
    fn drop(&mut self) {
        if self.child.take().is_some() {
            signal_group(self.pgid, "KILL");
        }
    }
}

fn signal_group(pgid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .args(["-s", signal, "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

async fn probe(bin: &Path) -> anyhow::Result<Build> {
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        Command::new(bin)
            .arg("-V")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("{} -V did not answer within 10 s", bin.display()))?
    .with_context(|| format!("cannot run {} -V", bin.display()))?;
    // nginx prints its version and configure arguments on stderr.
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let version: Vec<u32> = text
        .split("nginx/")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .map(|v| v.split('.').filter_map(|n| n.parse().ok()).collect())
        .with_context(|| format!("unexpected output from {} -V: {text:?}", bin.display()))?;
    let without = |module: &str| text.contains(&format!("--without-http_{module}_module"));
    for needed in ["rewrite", "map"] {
        if without(needed) {
            bail!(
                "nginx at {} was built without the {needed} module the sink needs",
                bin.display()
            );
        }
    }
    Ok(Build {
        error_log_flag: version >= vec![1, 19, 5],
        temp_modules: ["proxy", "fastcgi", "uwsgi", "scgi"]
            .into_iter()
            .filter(|m| !without(m))
            .collect(),
    })
}

/// A port free on every address now (bound and released).
fn free_port(ips: &[IpAddr]) -> anyhow::Result<u16> {
    for _ in 0..20 {
        let first = std::net::TcpListener::bind((ips[0], 0))?;
        let port = first.local_addr()?.port();
        if ips[1..]
            .iter()
            .all(|ip| std::net::TcpListener::bind((*ip, port)).is_ok())
        {
            return Ok(port);
        }
    }
    bail!(
        "no port was free on all {} addresses in 20 tries",
        ips.len()
    )
}

fn config(dir: &Path, build: &Build, ips: &[IpAddr], port: u16) -> String {
    let d = dir.display();
    let mut temp = format!("    client_body_temp_path {d}/client_body;\n");
    for m in &build.temp_modules {
        let _ = writeln!(temp, "    {m}_temp_path {d}/{m};");
    }
    let listen: String = ips
        .iter()
        .map(|ip| format!("        listen {ip}:{port};\n"))
        .collect();
    format!(
        r#"daemon off;
master_process on;
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 8192;
}}
http {{
    access_log off;
{temp}    client_max_body_size 64m;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    default_type text/plain;
    map $args $hub_challenge {{
        default "";
        "~(?:^|&)hub\.challenge=(?<challenge>[0-9A-Za-z_.~-]*)" $challenge;
    }}
    server {{
{listen}        location / {{
            if ($request_method = GET) {{
                return 200 $hub_challenge;
            }}
            return 204;
        }}
    }}
}}
"#
    )
}

async fn spawn(bin: &Path, build: &Build, ips: &[IpAddr], port: u16) -> anyhow::Result<NginxSink> {
    let dir = tempfile::Builder::new()
        .prefix("hubcast-nginx-")
        .tempdir()
        .context("cannot create the nginx directory")?;
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, config(dir.path(), build, ips, port))
        .context("cannot write the nginx config")?;
    let output = std::fs::File::create(dir.path().join("output.log"))?;
    let mut cmd = Command::new(bin);
    cmd.arg("-p").arg(dir.path()).arg("-c").arg(&conf);
    if build.error_log_flag {
        cmd.arg("-e").arg(dir.path().join("error.log"));
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let pgid = child.id().context("nginx exited at once")?;
    let mut sink = NginxSink {
        addrs: ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect(),
        child: Some(child),
        pgid,
        dir,
    };
    let until = Instant::now() + START_LIMIT;
    loop {
        let child = sink.child.as_mut().expect("just started");
        if let Some(status) = child.try_wait()? {
            sink.child = None;
            bail!("nginx did not start ({status}): {}", sink.log_tail());
        }
        let first = tokio::net::TcpStream::connect(sink.addrs[0]).await;
        let last = tokio::net::TcpStream::connect(sink.addrs[sink.addrs.len() - 1]).await;
        if first.is_ok() && last.is_ok() {
            return Ok(sink);
        }
        if Instant::now() > until {
            let tail = sink.log_tail();
            sink.stop().await;
            bail!(
                "nginx did not start: not accepting on port {port} within {START_LIMIT:?}: {tail}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl NginxSink {
    /// The last lines nginx wrote (its output and its error log).
    fn log_tail(&self) -> String {
        let mut lines = Vec::new();
        for f in ["output.log", "error.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
            lines.extend(text.lines().map(str::to_owned));
        }
        let start = lines.len().saturating_sub(10);
        lines[start..].join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_listens_on_every_address_and_keeps_paths_inside() {
        let build = Build {
            error_log_flag: true,
            temp_modules: vec!["proxy"],
        };
        let ips: Vec<IpAddr> = vec!["127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap()];
        let c = config(Path::new("/x"), &build, &ips, 8080);
        assert!(c.contains("listen 127.0.0.2:8080;") && c.contains("listen 127.0.0.3:8080;"));
        assert!(c.contains("pid /x/nginx.pid;") && c.contains("proxy_temp_path /x/proxy;"));
        assert!(!c.contains("uwsgi"));
        assert!(c.contains("access_log off;") && c.contains("return 204;"));
    }
}
