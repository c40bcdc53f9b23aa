//! Configuration: file + environment, and a clear error naming the key for
//! every kind of mistake; `check-config` from the real binary.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use carat_catalogd::config::{Config, ConfigError};
use common::*;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "merchant_key", &format!("{MERCHANT_KEY}\n"), 0o600);
        write(dir.path(), "jwtRS256.key", &rsa_key().0, 0o600);
        Env { dir }
    }
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// A valid config with `extra` lines appended to its sections.
    fn config(&self, carat_extra: &str, rest: &str) -> PathBuf {
        let body = format!(
            r#"[carat]
base_url = "https://esitef-homologacao.softwareexpress.com.br/e-sitef"
merchant_id = "LOJATESTE"
merchant_key_file = "{key}"
auth = "signature"
private_key_file = "{pk}"
{carat_extra}
{rest}
"#,
            key = self.p("merchant_key").display(),
            pk = self.p("jwtRS256.key").display(),
        );
        write(self.dir.path(), "config.toml", &body, 0o640)
    }
}

fn load(path: &Path) -> Result<Config, ConfigError> {
    Config::load_with_env(path, HashMap::new())
}

fn err_for(path: &Path, key: &str) -> String {
    let e = load(path).expect_err("must be refused");
    assert!(e.mentions(key), "expected a problem with {key}, got: {e}");
    e.to_string()
}

/// Replaces one line of the valid config.
fn with_line(env: &Env, old: &str, new: &str) -> PathBuf {
    let p = env.config("", "");
    let s = std::fs::read_to_string(&p).unwrap().replace(old, new);
    std::fs::write(&p, s).unwrap();
    p
}

#[test]
fn a_valid_config_loads_with_defaults() {
    let env = Env::new();
    let c = load(&env.config("", "")).unwrap();
    assert_eq!(c.client.merchant_key.expose(), MERCHANT_KEY);
    assert_eq!(c.settings.carat.concurrency, 8);
    assert_eq!(c.sync.ddds.len(), 67, "empty ddds means all 67");
    assert_eq!(c.sync.recharge_types.len(), 3);
    assert_eq!(c.settings.carat.order_id_prefix, "CATSYNC");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn base_url_must_be_https_and_a_domain() {
    let env = Env::new();
    let base = "https://esitef-homologacao.softwareexpress.com.br/e-sitef";
    let e = err_for(
        &with_line(&env, base, "https://200.201.202.203/e-sitef"),
        "carat.base_url",
    );
    assert!(e.contains("IP address"), "{e}");
    let e = err_for(
        &with_line(
            &env,
            base,
            "http://esitef-homologacao.softwareexpress.com.br/e-sitef",
        ),
        "carat.base_url",
    );
    assert!(e.contains("https"), "{e}");
    // The loopback simulator is the one exception.
    load(&with_line(&env, base, "https://localhost:8443/e-sitef")).unwrap();
    load(&with_line(&env, base, "https://127.0.0.1:8443/e-sitef")).unwrap();
}

#[test]
fn merchant_key_problems_name_the_key() {
    let env = Env::new();
    let key_line = format!("merchant_key_file = \"{}\"", env.p("merchant_key").display());
    let e = err_for(
        &with_line(&env, &key_line, "merchant_key_file = \"/nonexistent/key\""),
        "carat.merchant_key_file",
    );
    assert!(e.contains("cannot read"), "{e}");
    write(env.dir.path(), "short_key", "ABC\n", 0o600);
    let e = err_for(
        &with_line(
            &env,
            &key_line,
            &format!("merchant_key_file = \"{}\"", env.p("short_key").display()),
        ),
        "carat.merchant_key_file",
    );
    assert!(e.contains("too short"), "{e}");
    let e = err_for(
        &with_line(&env, &key_line, "merchant_key = \"not-a-valid key!\""),
        "carat.merchant_key",
    );
    assert!(e.contains("letters and digits"), "{e}");
    assert!(
        !e.contains("not-a-valid"),
        "an invalid key is still not echoed: {e}"
    );
}

/// A typo on the merchant key's line is an error that says where and why,
/// never quoting the line: from the library, from `check-config` and from
/// the daemon at start.
#[test]
fn a_broken_merchant_key_line_is_never_quoted() {
    let env = Env::new();
    let key_line = format!("merchant_key_file = \"{}\"", env.p("merchant_key").display());
    let secret = "SUPERSECRETKEY0123456789ABCDEF";
    let unterminated = with_line(&env, &key_line, &format!("merchant_key = \"{secret}"));
    let e = load(&unterminated).expect_err("not TOML");
    let msg = e.to_string();
    assert!(msg.contains("line 4") && msg.contains("not valid TOML"), "{msg}");
    assert!(!msg.contains(secret), "the secret is quoted: {msg}");
    for args in [&["check-config"][..], &["run"][..]] {
        let out = bin_command()
            .arg("--config")
            .arg(&unterminated)
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let all = [out.stdout, out.stderr].concat();
        assert!(
            !String::from_utf8_lossy(&all).contains(secret),
            "{args:?}: {}",
            String::from_utf8_lossy(&all)
        );
        assert!(String::from_utf8_lossy(&all).contains("line 4"), "{args:?}");
    }
}

#[test]
fn private_key_problems_name_the_key() {
    let env = Env::new();
    let pk_line = format!("private_key_file = \"{}\"", env.p("jwtRS256.key").display());
    let e = err_for(
        &with_line(&env, &pk_line, "private_key_file = \"/nonexistent.pem\""),
        "carat.private_key_file",
    );
    assert!(e.contains("cannot read"), "{e}");
    write(
        env.dir.path(),
        "garbage.pem",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        0o600,
    );
    err_for(
        &with_line(
            &env,
            &pk_line,
            &format!("private_key_file = \"{}\"", env.p("garbage.pem").display()),
        ),
        "carat.private_key_file",
    );
    let small = format!(
        "{}/tests/fixtures/rsa1024_test_only.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let e = err_for(
        &with_line(&env, &pk_line, &format!("private_key_file = \"{small}\"")),
        "carat.private_key_file",
    );
    assert!(e.contains("2048"), "{e}");
    assert!(!e.contains("BEGIN"), "no key material in errors: {e}");
}

#[test]
fn sync_section_problems_name_the_key() {
    let env = Env::new();
    let e = err_for(
        &env.config("", "[sync]\nrecharge_types = [\"normal\", \"gift\"]"),
        "sync.recharge_types",
    );
    assert!(e.contains("gift"), "{e}");
    let e = err_for(&env.config("", "[sync]\nddds = [\"11\", \"20\"]"), "sync.ddds");
    assert!(e.contains("\"20\""), "{e}");
    let e = err_for(
        &env.config("", "[sync]\nschedule = \"*/15 * * * *\""),
        "sync.schedule",
    );
    assert!(e.contains("seconds first"), "{e}");
    // A line no date matches would leave the catalog with no scheduled check.
    for never in ["0 0 0 30 2 *", "0 0 0 1 1 * 2020"] {
        let e = err_for(
            &env.config("", &format!("[sync]\nschedule = \"{never}\"")),
            "sync.schedule",
        );
        assert!(e.contains("never fires"), "{never}: {e}");
    }
    err_for(
        &env.config("", "[sync]\njitter_seconds = -5"),
        "sync.jitter_seconds",
    );
    err_for(&env.config("concurrency = 0", ""), "carat.concurrency");
    err_for(
        &with_line(&env, "auth = \"signature\"", "auth = \"password\""),
        "carat.auth",
    );
}

#[test]
fn several_problems_are_reported_together() {
    let env = Env::new();
    let e = load(&env.config(
        "concurrency = 500",
        "[sync]\nddds = [\"00\"]\nschedule = \"nope\"",
    ))
    .unwrap_err();
    for key in ["carat.concurrency", "sync.ddds", "sync.schedule"] {
        assert!(e.mentions(key), "{key} missing in {e}");
    }
}

#[test]
fn an_unknown_key_is_refused() {
    let env = Env::new();
    let e = load(&env.config("merchnt_id = \"typo\"", ""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("merchnt_id"), "{e}");
}

#[test]
fn environment_overrides_the_file() {
    let env = Env::new();
    let p = env.config("", "[sync]\nddds = [\"11\"]");
    let vars: HashMap<String, String> = [
        ("CARAT_CATALOGD_CARAT__CONCURRENCY", "3"),
        ("CARAT_CATALOGD_SYNC__RECHARGE_TYPES", "normal,others"),
        ("CARAT_CATALOGD_SYNC__DDDS", "21,11"),
        ("CARAT_CATALOGD_STORE__PATH", "/tmp/elsewhere.db"),
        ("CARAT_CATALOGD_CARAT__MERCHANT_ID", "007LOJA"),
        ("CARAT_CATALOGD_CONFIG", "/ignored/as/a/setting"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let c = Config::load_with_env(&p, vars).unwrap();
    assert_eq!(c.settings.carat.concurrency, 3);
    assert_eq!(c.sync.recharge_types.len(), 2);
    let ddds: Vec<_> = c.sync.ddds.iter().map(|d| d.as_str()).collect();
    assert_eq!(ddds, ["11", "21"]);
    assert_eq!(c.settings.store.path, PathBuf::from("/tmp/elsewhere.db"));
    assert_eq!(c.client.merchant_id, "007LOJA", "leading zeros survive");
}

#[test]
fn a_world_readable_config_holding_the_key_gets_a_warning() {
    let env = Env::new();
    let key_line = format!("merchant_key_file = \"{}\"", env.p("merchant_key").display());
    let p = with_line(&env, &key_line, &format!("merchant_key = \"{MERCHANT_KEY}\""));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = load(&p).unwrap();
    assert!(
        c.warnings.iter().any(|w| w.contains("readable by every user")),
        "{:?}",
        c.warnings
    );
    // The key from the environment: the file does not hold it, no warning.
    let p = with_line(&env, &key_line, "");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let key_env = HashMap::from([(
        "CARAT_CATALOGD_CARAT__MERCHANT_KEY".to_owned(),
        MERCHANT_KEY.to_owned(),
    )]);
    let c = Config::load_with_env(&p, key_env).unwrap();
    assert!(
        !c.warnings.iter().any(|w| w.contains("readable by every user")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn check_config_prints_redacted_and_fails_on_errors() {
    let env = Env::new();
    let key_line = format!("merchant_key_file = \"{}\"", env.p("merchant_key").display());
    let inline = with_line(&env, &key_line, &format!("merchant_key = \"{MERCHANT_KEY}\""));
    let p = env.p("good.toml");
    std::fs::rename(&inline, &p).unwrap();
    let out = bin_command()
        .args(["--config", p.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("merchant_key = \"[redacted]\""), "{stdout}");
    assert!(stdout.contains("merchant_id = \"LOJATESTE\""), "{stdout}");
    let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!all.contains(MERCHANT_KEY), "the merchant key leaked");
    assert!(!all.contains("PRIVATE KEY"), "key material leaked");

    let bad = env.config("", "[sync]\nrecharge_types = [\"gift\"]");
    let out = bin_command()
        .args(["--config", bad.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sync.recharge_types: unknown recharge type \"gift\""),
        "{stderr}"
    );

    // The config path can come from the environment too.
    let out = bin_command()
        .arg("check-config")
        .env("CARAT_CATALOGD_CONFIG", &p)
        .env("CARAT_CATALOGD_CARAT__CONCURRENCY", "5")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("concurrency = 5"));
}

#[test]
fn carat_compat_defaults_to_the_public_examples_is_switchable_and_shown() {
    use carat_catalogd::carat::compat::{DealerCodeForm, OthersRequest};
    let env = Env::new();
    let c = load(&env.config("", "")).unwrap();
    assert_eq!(c.client.compat.dealer_code, DealerCodeForm::Trimmed);
    assert_eq!(c.client.compat.others_request, OthersRequest::Nested);

    let p = env.p("compat.toml");
    std::fs::rename(
        env.config(
            "[carat.compat]\ndealer_code = \"padded\"\nothers_request = \"flat\"",
            "",
        ),
        &p,
    )
    .unwrap();
    let c = load(&p).unwrap();
    assert_eq!(c.client.compat.dealer_code, DealerCodeForm::Padded);
    assert_eq!(c.client.compat.others_request, OthersRequest::Flat);

    // The environment reaches the nested table too.
    let vars: HashMap<String, String> = [("CARAT_CATALOGD_CARAT__COMPAT__DEALER_CODE", "padded")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let c = Config::load_with_env(&env.config("", ""), vars).unwrap();
    assert_eq!(c.client.compat.dealer_code, DealerCodeForm::Padded);

    let e = err_for(
        &env.config("[carat.compat]\ndealer_code = \"zeros\"", ""),
        "carat.compat.dealer_code",
    );
    assert!(e.contains("\"trimmed\"") && e.contains("\"padded\""), "{e}");
    err_for(
        &env.config("[carat.compat]\nothers_request = \"deep\"", ""),
        "carat.compat.others_request",
    );
    let e = load(&env.config("[carat.compat]\ndealercode = \"padded\"", ""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("dealercode"), "an unknown switch is refused: {e}");

    // check-config shows the switches in force.
    let out = bin_command()
        .args(["--config", p.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("[carat.compat]")
            && stdout.contains("dealer_code = \"padded\"")
            && stdout.contains("others_request = \"flat\""),
        "{stdout}"
    );
}

/// The annotated example the package installs parses and validates (with
/// the secrets it names pointed at test files).
#[test]
fn the_example_config_is_valid() {
    let env = Env::new();
    let vars: HashMap<String, String> = [
        ("CARAT_CATALOGD_CARAT__MERCHANT_KEY_FILE", env.p("merchant_key")),
        ("CARAT_CATALOGD_CARAT__PRIVATE_KEY_FILE", env.p("jwtRS256.key")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.display().to_string()))
    .collect();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config.toml");
    let c = Config::load_with_env(&example, vars).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.client.compat,
        Default::default(),
        "the example shows the defaults"
    );
}

#[test]
fn api_timeouts_default_to_ten_seconds_and_are_bounded() {
    let env = Env::new();
    let c = load(&env.config("", "")).unwrap();
    assert_eq!(c.settings.api.write_timeout(), std::time::Duration::from_secs(10));
    assert_eq!(c.settings.api.idle_timeout(), std::time::Duration::from_secs(10));
    let c = load(&env.config("", "[api]\nwrite_timeout_seconds = 3\nidle_timeout_seconds = 120")).unwrap();
    assert_eq!(c.settings.api.write_timeout(), std::time::Duration::from_secs(3));
    assert_eq!(c.settings.api.idle_timeout(), std::time::Duration::from_secs(120));
    err_for(
        &env.config("", "[api]\nwrite_timeout_seconds = 0"),
        "api.write_timeout_seconds",
    );
    err_for(
        &env.config("", "[api]\nidle_timeout_seconds = 7200"),
        "api.idle_timeout_seconds",
    );
}

#[test]
fn shrink_and_size_guards_have_defaults_and_bounds() {
    let env = Env::new();
    let c = load(&env.config("", "")).unwrap();
    assert_eq!(c.sync.min_keep_percent, 50);
    assert_eq!(c.settings.carat.max_catalog_bytes, 128 * 1024 * 1024);
    err_for(
        &env.config("", "[sync]\nmin_keep_percent = 101"),
        "sync.min_keep_percent",
    );
    let e = err_for(
        &env.config("max_catalog_bytes = 2000000", ""),
        "carat.max_catalog_bytes",
    );
    assert!(e.contains("carat.max_body_bytes"), "{e}");
    let c = load(&env.config("", "[sync]\nmin_keep_percent = 0")).unwrap();
    assert_eq!(c.sync.min_keep_percent, 0);
}

/// A store app's user may not read the configuration (root:carat-catalogd
/// 0640, in a 0750 directory): the readers (`status`, `dealers`, `offers`,
/// `watch`) then use the default sockets and the environment's overrides,
/// and say so, instead of failing on the file.
#[test]
fn readers_fall_back_to_the_default_sockets_when_the_config_is_unreadable() {
    let env = Env::new();
    let cfg = env.config("", "");
    let as_root = rustix::process::geteuid().is_root();
    let mut cmd = if as_root {
        // Root reads anything: run as nobody, who cannot enter the temp dir.
        let mut c = command("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(bin());
        c
    } else {
        std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
        bin_command()
    };
    let out = cmd
        .arg("--config")
        .arg(&cfg)
        .arg("status")
        .env("CARAT_CATALOGD_API__SOCKET", "/nonexistent/catalog.sock")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is not readable by this user"), "{err}");
    assert!(
        err.contains("cannot connect to /nonexistent/catalog.sock"),
        "the readers use the default/overridden socket: {err}"
    );
}

/// A password in `forward_url` is a secret: `check-config` shows it as
/// `[redacted]`, and a bad URL's error does not quote it.
#[test]
fn a_forward_url_password_is_never_shown() {
    let env = Env::new();
    let check = |url: &str| {
        let body = format!(
            "[carat]\nbase_url = \"https://esitef-homologacao.softwareexpress.com.br/e-sitef\"\n\
             merchant_id = \"LOJATESTE\"\nmerchant_key_file = \"{}\"\nauth = \"authenticity_post\"\n\
             [carat.authenticity_post]\nlisten = \"127.0.0.1:0\"\nforward_url = \"{url}\"\n",
            env.p("merchant_key").display()
        );
        let p = write(env.dir.path(), "post.toml", &body, 0o640);
        let out = bin_command()
            .args(["--config", p.to_str().unwrap(), "check-config"])
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), all)
    };
    let (ok, all) = check("https://pos:hunter2pass@pos.example/carat");
    assert!(
        ok && all.contains("forward_url = \"https://pos:[redacted]@pos.example/carat\""),
        "{all}"
    );
    assert!(!all.contains("hunter2pass"), "{all}");
    let (ok, all) = check("ftp://pos:hunter2pass@pos.example/carat");
    assert!(
        !ok && all.contains("carat.authenticity_post.forward_url"),
        "{all}"
    );
    assert!(!all.contains("hunter2pass"), "{all}");
}

/// A one-shot sync before the store's directory exists (a fresh install,
/// before the service first started) says so, not "cannot open the lock
/// file".
#[test]
fn a_sync_without_the_store_directory_says_so() {
    let env = Env::new();
    let cfg = env.config("", "[store]\npath = \"/nonexistent/carat-catalogd/catalog.db\"");
    let out = bin_command()
        .args(["--config", cfg.to_str().unwrap(), "sync"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("/nonexistent/carat-catalogd") && err.contains("does not exist"),
        "{err}"
    );
    assert!(!err.contains("lock file"), "{err}");
}

/// DDDs written as TOML numbers are the same DDDs, not a type error.
#[test]
fn ddds_may_be_written_as_numbers() {
    let env = Env::new();
    let c = load(&env.config("", "[sync]\nddds = [21, 11, \"31\"]")).unwrap();
    let ddds: Vec<_> = c.sync.ddds.iter().map(|d| d.as_str()).collect();
    assert_eq!(ddds, ["11", "21", "31"]);
    let e = err_for(&env.config("", "[sync]\nddds = [1]"), "sync.ddds");
    assert!(e.contains('1'), "{e}");
}

/// The schedule is checked as the scheduler runs it: a day of the month
/// and a weekday both given must both match (the 1st when it is a Monday),
/// not either, as classic cron would have it.
#[test]
fn a_schedule_with_a_day_and_a_weekday_needs_both() {
    use chrono::TimeZone;
    let c = carat_catalogd::config::parse_cron("0 0 12 1 * MON").unwrap();
    let from = chrono::Utc.with_ymd_and_hms(2026, 12, 1, 13, 0, 0).unwrap();
    let next = c.find_next_occurrence(&from, false).unwrap();
    assert_eq!(next, chrono::Utc.with_ymd_and_hms(2027, 2, 1, 12, 0, 0).unwrap());
}

/// A variable that names no key (one underscore where two belong) is
/// blamed on the environment and named, not on the file.
#[test]
fn an_environment_variable_that_names_no_key_is_named() {
    let env = Env::new();
    let vars = HashMap::from([("CARAT_CATALOGD_SYNC_DDDS".to_owned(), "11".to_owned())]);
    let e = Config::load_with_env(&env.config("", ""), vars).expect_err("refused");
    let msg = e.to_string();
    assert!(e.mentions("(environment)"), "{msg}");
    assert!(
        msg.contains("CARAT_CATALOGD_SYNC_DDDS") && msg.contains("two underscores"),
        "{msg}"
    );
    // A right one still works.
    let vars = HashMap::from([("CARAT_CATALOGD_SYNC__DDDS".to_owned(), "11".to_owned())]);
    let c = Config::load_with_env(&env.config("", ""), vars).unwrap();
    assert_eq!(c.sync.ddds.len(), 1);
}

/// What `check-config` prints is a configuration: loaded back, it gives
/// the same settings (the secrets, being `[redacted]`, are in files here).
#[test]
fn check_config_prints_a_config_that_loads_back() {
    let env = Env::new();
    let p = env.config(
        "concurrency = 3",
        "[sync]\nddds = [21, \"11\"]\n[api]\nthreads = 2",
    );
    let out = bin_command()
        .args(["--config", p.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("private key: RSA, 2048 bits"));
    let printed = write(
        env.dir.path(),
        "printed.toml",
        &String::from_utf8_lossy(&out.stdout),
        0o640,
    );
    let (a, b) = (load(&p).unwrap(), load(&printed).unwrap());
    assert_eq!(a.settings, b.settings);
    assert_eq!(b.settings.carat.concurrency, 3);
    assert_eq!(b.settings.api.threads, 2);
}

/// A value of the wrong type from the environment names its key and the
/// variable that set it.
#[test]
fn a_wrongly_typed_environment_value_names_its_key_and_variable() {
    let env = Env::new();
    let vars = HashMap::from([("CARAT_CATALOGD_CARAT__CONCURRENCY".to_owned(), "many".to_owned())]);
    let e = Config::load_with_env(&env.config("", ""), vars).expect_err("refused");
    assert!(e.mentions("carat.concurrency"), "{e}");
    assert!(e.to_string().contains("CARAT_CATALOGD_CARAT__CONCURRENCY"), "{e}");
}

/// `api.tcp_listen` takes a loopback address only, and says why.
#[test]
fn tcp_listen_is_loopback_only() {
    let env = Env::new();
    for (addr, ok) in [
        ("127.0.0.1:8088", true),
        ("[::1]:8088", true),
        ("0.0.0.0:8088", false),
        ("192.168.0.10:8088", false),
    ] {
        let p = env.config("", &format!("[api]\ntcp_listen = \"{addr}\""));
        match Config::load_with_env(&p, HashMap::new()) {
            Ok(c) => assert!(ok, "{addr} was taken: {:?}", c.settings.api.tcp_listen),
            Err(e) => {
                assert!(!ok, "{addr}: {e}");
                assert!(e.mentions("api.tcp_listen"), "{e}");
                let text = e.to_string();
                assert!(
                    text.contains("not a loopback address") && text.contains("peer credentials"),
                    "{text}"
                );
            }
        }
    }
}
