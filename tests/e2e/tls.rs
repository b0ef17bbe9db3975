//! `mqtts://` against a real Mosquitto TLS listener that requires client certificates and a
//! password, with certificates made in the test. A valid client connects and events flow;
//! a wrong CA, an expired or missing client certificate, a wrong password and a plaintext
//! listener each give a clear error and retries with backoff: never a crash, never a
//! fallback to plaintext.

use crate::OVERHEAT;
use edgewatch_e2e::pki::{Ca, Pem};
use edgewatch_e2e::{AgentToml, Mosquitto, Publisher, RunningAgent, Subscriber, toml_path};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

const PASSWORD: &str = "s3cret-Pa55";

struct Setup {
    broker: Mosquitto,
    tls: SocketAddr,
    ca: Ca,
    other_ca: Ca,
    client: Pem,
    expired: Pem,
    _dir: tempfile::TempDir,
}

/// Mosquitto with a plaintext listener (for the test's own clients) and a TLS listener
/// that requires a certificate from `ca` and the password of user `edge`.
fn setup() -> Option<Setup> {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new(dir.path(), "test-ca");
    let other_ca = Ca::new(dir.path(), "other-ca");
    let server = ca.server("broker");
    let client = ca.client("gateway");
    let expired = ca.expired_client("old-gateway");
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, "").expect("passwd");
    let status = Command::new("mosquitto_passwd").arg("-b").arg(&passwd).arg("edge").arg(PASSWORD).status();
    if !status.is_ok_and(|s| s.success()) {
        assert!(std::env::var("EDGEWATCH_REQUIRE_MOSQUITTO").is_err(), "mosquitto_passwd failed");
        return None;
    }
    let tls = edgewatch::broker::free_port().expect("port");
    let extra = format!(
        "password_file {}\nlistener {} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
        passwd.display(),
        tls.port(),
        ca.cert.display(),
        server.cert.display(),
        server.key.display()
    );
    let broker = Mosquitto::start_configured(None, None, &extra)?;
    edgewatch::broker::wait_until_listening(tls, Duration::from_secs(10)).expect("TLS listener up");
    Some(Setup { broker, tls, ca, other_ca, client, expired, _dir: dir })
}

/// The agent of these tests: the source at `url` as user `edge` with the password in
/// `password_file`, trusting `ca`, presenting `client`'s certificate when given.
fn agent_config(url: &str, ca: &Path, client: Option<&Pem>, password_file: &Path) -> AgentToml {
    let config = AgentToml::new()
        .id("gw-tls")
        .set("source.url", url)
        .set("source.username", "edge")
        .set("source.password_file", password_file)
        .set("source.reconnect_min", Duration::from_millis(200))
        .set("source.reconnect_max", Duration::from_secs(1))
        .set("source.ca_file", ca)
        .subscribe("sensors/#");
    match client {
        Some(c) => config.set("source.client_cert", &c.cert).set("source.client_key", &c.key),
        None => config,
    }
}

/// Starts an agent that must fail to connect; returns its latest error after a few
/// attempts (retried with the backoff the `reconnect` tests check), checking that it never
/// connected.
async fn refused(config: &str, what: &str) -> String {
    let agent = RunningAgent::spawn(config, &[("o.rhai", OVERHEAT)]).await;
    let source = || agent.stats.detail.connection("source");
    agent.wait_for_stats(what, |_| source().failures.load(Relaxed) >= 3).await;
    assert_eq!(source().connects.load(Relaxed), 0, "{what}: must never connect");
    assert!(!agent.readiness().source_connected, "{what}");
    let error = source().last_error.lock().expect("lock").clone().expect("an error is reported");
    assert!(!error.contains(PASSWORD), "{what}: the password leaked into an error: {error}");
    agent.stop().await;
    eprintln!("{what}: {error}");
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_password_connects_and_events_flow() {
    let Some(s) = setup() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).expect("pw");
    let url = format!("mqtts://localhost:{}", s.tls.port());
    let agent =
        RunningAgent::start(&agent_config(&url, &s.ca.cert, Some(&s.client), &pw).to_string(), &[("o.rhai", OVERHEAT)])
            .await;
    let mut upstream = Subscriber::connect(s.broker.addr, "cloud", "edgewatch/gw-tls/events/#").await;
    let mut sensor = Publisher::connect(s.broker.addr, "sensor").await;
    sensor.publish("sensors/t-9/temperature", "99").await;
    let ev = upstream.next().await.json();
    assert_eq!(ev["subject"], "t-9");
    // By IP too: the server certificate names 127.0.0.1.
    let stats = agent.stop().await;
    assert_eq!(stats.events, 1);
    let by_ip = format!("mqtts://127.0.0.1:{}", s.tls.port());
    let agent = RunningAgent::start(
        &agent_config(&by_ip, &s.ca.cert, Some(&s.client), &pw).to_string(),
        &[("o.rhai", OVERHEAT)],
    )
    .await;
    agent.stop().await;
}

/// The password from `password_env`, for a real login. The agent reads the variable from its
/// process environment, and setting one in this test binary is `unsafe` (forbidden in the
/// workspace; tests run in parallel), so the test runs itself again in a child process with
/// the variable set, where it does the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_from_the_environment_logs_in() {
    const VAR: &str = "EDGEWATCH_E2E_TLS_PASSWORD_ENV";
    const NAME: &str = "tls::a_password_from_the_environment_logs_in";
    if std::env::var_os(VAR).is_none() {
        let exe = std::env::current_exe().expect("the test binary");
        let out = Command::new(exe).args(["--exact", NAME, "--nocapture"]).env(VAR, PASSWORD).output().expect("runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "the child run failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let Some(s) = setup() else { return };
    let url = format!("mqtts://localhost:{}", s.tls.port());
    let placeholder = Path::new("/nonexistent/pw");
    let config = agent_config(&url, &s.ca.cert, Some(&s.client), placeholder)
        .unset("source.password_file")
        .set("source.password_env", VAR)
        .to_string();
    assert!(config.contains("password_env") && !config.contains("password_file"), "{config}");
    // Ready means connected and subscribed: Mosquitto took the password.
    let agent = RunningAgent::start(&config, &[("o.rhai", OVERHEAT)]).await;
    let mut upstream = Subscriber::connect(s.broker.addr, "cloud", "edgewatch/gw-tls/events/#").await;
    let mut sensor = Publisher::connect(s.broker.addr, "sensor").await;
    sensor.publish("sensors/t-8/temperature", "98").await;
    assert_eq!(upstream.next().await.json()["subject"], "t-8");
    assert!(agent.stats.detail.connection("source").connects.load(Relaxed) >= 1);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_refused_clearly_and_retried() {
    let Some(s) = setup() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, PASSWORD).expect("pw");
    let url = format!("mqtts://localhost:{}", s.tls.port());

    let e = refused(&agent_config(&url, &s.other_ca.cert, Some(&s.client), &pw).to_string(), "wrong CA").await;
    assert!(e.contains("UnknownIssuer") && e.contains("ca_file"), "wrong CA: {e}");

    let e = refused(&agent_config(&url, &s.ca.cert, Some(&s.expired), &pw).to_string(), "expired cert").await;
    assert!(e.contains("CertificateExpired") && e.contains("client_cert"), "expired client certificate: {e}");

    let e = refused(&agent_config(&url, &s.ca.cert, None, &pw).to_string(), "no client cert").await;
    assert!(e.contains("CertificateRequired") && e.contains("client_key"), "missing client certificate: {e}");

    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-password").expect("pw");
    let e = refused(&agent_config(&url, &s.ca.cert, Some(&s.client), &wrong).to_string(), "wrong password").await;
    assert!(e.contains("NotAuthorized") && e.contains("password"), "wrong password: {e}");
    assert!(!e.contains("not-the-password"), "{e}");

    // `mqtts://` to a plaintext listener: a TLS error, never a plaintext session.
    let plain = format!("mqtts://localhost:{}", s.broker.addr.port());
    let e = refused(&agent_config(&plain, &s.ca.cert, Some(&s.client), &pw).to_string(), "plaintext listener").await;
    assert!(e.contains("TLS") && e.contains("TLS listener"), "{e}");
}

#[test]
fn tls_settings_are_checked_before_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new(dir.path(), "ca");
    let client = ca.client("c");
    let check = |source: &str| {
        let text = format!("[agent]\nstate_dir = \"/tmp/x\"\n[source]\n{source}\n[[subscriptions]]\ntopic = \"a/#\"\n");
        edgewatch::Config::from_toml(&text, "t.toml", std::iter::empty()).map(|_| ()).map_err(|e| e.to_string())
    };
    let ca_line = format!("ca_file = {}", toml_path(&ca.cert));
    assert_eq!(check(&format!("url = \"mqtts://localhost\"\n{ca_line}")), Ok(()));
    // TLS files with a plaintext URL would silently not use TLS: refused.
    let e = check(&format!("url = \"mqtt://localhost\"\n{ca_line}")).expect_err("plaintext with a CA");
    assert!(e.contains("source.ca_file") && e.contains("mqtts://"), "{e}");
    let e = check("url = \"mqtts://localhost\"\nca_file = \"/nonexistent/ca.pem\"").expect_err("missing CA");
    assert!(e.contains("source.ca_file") && e.contains("/nonexistent/ca.pem"), "{e}");
    let cert_only = format!("url = \"mqtts://localhost\"\n{ca_line}\nclient_cert = {}", toml_path(&client.cert));
    assert!(check(&cert_only).expect_err("no key").contains("source.client_key"));
    // A key file that is not a key: named, content not shown.
    let bogus = dir.path().join("bogus.key");
    std::fs::write(&bogus, "TOP-SECRET-BYTES").expect("write");
    let e = check(&format!(
        "url = \"mqtts://localhost\"\n{ca_line}\nclient_cert = {}\nclient_key = {}",
        toml_path(&client.cert),
        toml_path(&bogus)
    ))
    .expect_err("bad key");
    assert!(e.contains("source.client_key") && e.contains("bogus.key") && !e.contains("TOP-SECRET"), "{e}");
    // A key that belongs to another certificate.
    let other = ca.client("other");
    let e = check(&format!(
        "url = \"mqtts://localhost\"\n{ca_line}\nclient_cert = {}\nclient_key = {}",
        toml_path(&client.cert),
        toml_path(&other.key)
    ));
    if let Err(e) = e {
        assert!(e.contains("source.client_key"), "{e}");
    }
    // Password from the environment: the variable must exist.
    let e = check("url = \"mqtt://h\"\nusername = \"u\"\npassword_env = \"EDGEWATCH_TEST_SURELY_UNSET\"")
        .expect_err("unset");
    assert!(e.contains("source.password_env") && e.contains("EDGEWATCH_TEST_SURELY_UNSET"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_client_certificate_applies_at_the_next_reconnect() {
    let Some(s) = setup() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, PASSWORD).expect("pw");
    // The gateway's certificate files, as a renewal job would manage them.
    let live = Pem { cert: dir.path().join("gw.crt"), key: dir.path().join("gw.key") };
    std::fs::copy(&s.expired.cert, &live.cert).expect("copy");
    std::fs::copy(&s.expired.key, &live.key).expect("copy");
    let url = format!("mqtts://localhost:{}", s.tls.port());
    let agent =
        RunningAgent::spawn(&agent_config(&url, &s.ca.cert, Some(&live), &pw).to_string(), &[("o.rhai", OVERHEAT)])
            .await;
    let source = || agent.stats.detail.connection("source");
    agent.wait_for_stats("the expired certificate refused", |_| source().failures.load(Relaxed) >= 2).await;
    // Renew: write-then-rename, key first, as certbot-style tools do.
    for (from, to) in [(&s.client.key, &live.key), (&s.client.cert, &live.cert)] {
        let tmp = to.with_extension("new");
        std::fs::copy(from, &tmp).expect("copy");
        std::fs::rename(&tmp, to).expect("rename");
    }
    agent.wait_ready().await;
    assert!(source().connects.load(Relaxed) >= 1);
    agent.stop().await;
}
