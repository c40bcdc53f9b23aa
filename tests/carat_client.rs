//! The Carat client against the simulator over real TLS: both auth modes,
//! a rejected signature, and every fault kind mapped to its typed error.

mod common;

use std::time::Duration;

use carat_catalogd::carat::client::{AuthMode, ClientSettings};
use carat_catalogd::carat::compat::OthersTarget;
use carat_catalogd::carat::{CaratClient, CaratError, ErrorClass, Session};
use carat_catalogd::catalog::{BranchCode, Ddd, DealerCode, GeneralHash, RechargeType};
use carat_catalogd::run::SessionIds;
use carat_catalogd::sim::{self, FaultKind, FaultRule, GenSpec, SimAuth, SimCatalog, SimConfig, SimEndpoint};
use common::*;

fn ids(n: u64) -> SessionIds {
    SessionIds {
        order_id: format!("CATSYNC{n}"),
        merchant_usn: n.to_string(),
    }
}

fn zero() -> GeneralHash {
    GeneralHash::zero()
}

async fn begin_normal(c: &CaratClient) -> Session {
    c.begin(RechargeType::Normal, &zero(), &ids(17_000_000_001))
        .await
        .expect("begin")
}

#[tokio::test]
async fn signature_mode_begin_dealers_branch_data() {
    let sim = start_sim_signature(SimCatalog::generate(GenSpec {
        dealers: 4,
        ddds: 67,
        ranges: 3,
    }))
    .await;
    let c = signature_client(&sim);

    let s = begin_normal(&c).await;
    assert_eq!(s.general_hash.as_str(), sim.hash("normal").unwrap());
    assert_eq!(s.nit.as_str().len(), 64);

    let dealers = c.dealers(&s, &zero()).await.expect("dealers");
    let names: Vec<_> = dealers.dealers.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["Vivo", "Claro", "Oi", "Tim"]);
    assert_eq!(dealers.hash, s.general_hash);

    let d = DealerCode::parse("001").unwrap();
    let bd = c
        .branch_data_normal(&s, &d, &Ddd::parse("11").unwrap(), &zero())
        .await
        .expect("branch data");
    let cat = &bd.data.categories[0];
    assert_eq!(cat.amount_ranges.len(), 3);
    // The simulator's first range: 500 centavos minimum, bonus present; the
    // second has no bonus at all (absent stays None, never 0).
    assert_eq!(cat.amount_ranges[0].min_amount, 500);
    assert_eq!(cat.amount_ranges[0].extras.bonus, Some(50));
    assert_eq!(cat.amount_ranges[1].extras.bonus, None);
    assert_eq!(cat.amount_ranges[0].extras.expiry_days, Some(30));

    // others: branch data by PUT with the nested body (the default).
    let so = c
        .begin(RechargeType::Others, &zero(), &ids(17_000_000_002))
        .await
        .expect("begin others");
    let od = c.dealers(&so, &zero()).await.expect("others dealers");
    assert_eq!(od.dealers.len(), 6);
    let e_prepag = od.dealers.iter().find(|d| d.code.as_str() == "901").unwrap();
    assert_eq!(e_prepag.branches.len(), 3);
    assert_eq!(e_prepag.type_name.as_deref(), Some("PIN GAMES"));
    let bd = c
        .branch_data_others(
            &so,
            OthersTarget {
                dealer: &e_prepag.code,
                type_code: e_prepag.type_code.as_deref(),
                branch: &BranchCode::parse("98001000000").unwrap(),
            },
            &zero(),
        )
        .await
        .expect("others branch data");
    assert_eq!(bd.data.categories[0].fixed_amounts.len(), 3);

    // A normal-only call on an others session is refused by Carat's rule.
    let err = c
        .branch_data_normal(&so, &d, &Ddd::parse("11").unwrap(), &zero())
        .await
        .unwrap_err();
    assert!(matches!(err, CaratError::Status { status: 400, .. }), "{err}");

    assert_eq!(sim.count(SimEndpoint::Begin), 2);
    assert_eq!(sim.count(SimEndpoint::Dealers), 2);
}

#[tokio::test]
async fn authenticity_post_mode_over_tls() {
    init_tracing();
    // The receiver: real HTTPS with its own certificate.
    let (ca, cert, key) = sim::make_test_pki().unwrap();
    let rx = receiver();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = carat_catalogd::net::tls_acceptor(cert.as_bytes(), key.as_bytes()).unwrap();
    let router = rx.router();
    let server = tokio::spawn(carat_catalogd::net::serve_tcp(
        listener,
        Some(acceptor),
        router,
        std::future::pending(),
    ));

    let cfg = SimConfig::new(
        MERCHANT_ID,
        MERCHANT_KEY,
        SimAuth::AuthenticityPost {
            url: format!("https://localhost:{port}/carat/authenticity")
                .parse()
                .unwrap(),
            ca_pem: Some(ca.into_bytes()),
        },
    );
    let sim = sim::start(cfg).await.unwrap();
    let c = CaratClient::new(
        client_settings(&sim),
        AuthMode::AuthenticityPost {
            receiver: rx.clone(),
            wait: Duration::from_secs(5),
        },
    )
    .unwrap();

    let s = begin_normal(&c).await;
    assert_eq!(s.general_hash.as_str(), sim.hash("normal").unwrap());
    assert_eq!(sim.stats().authenticity_posts, 1);
    let dealers = c.dealers(&s, &zero()).await.expect("dealers");
    assert_eq!(dealers.dealers.len(), 4);
    let bd = c
        .branch_data_normal(&s, &dealers.dealers[3].code, &Ddd::parse("99").unwrap(), &zero())
        .await
        .expect("branch data");
    assert!(!bd.data.categories.is_empty());

    // The POST never comes: a clear error after wait_seconds.
    let short = CaratClient::new(
        client_settings(&sim),
        AuthMode::AuthenticityPost {
            receiver: rx.clone(),
            wait: Duration::from_millis(300),
        },
    )
    .unwrap();
    sim.add_fault(FaultRule::new(Some(SimEndpoint::Begin), FaultKind::AuthPostMissing).times(1));
    let err = short
        .begin(RechargeType::Normal, &zero(), &ids(17_000_000_010))
        .await
        .unwrap_err();
    assert!(matches!(err, CaratError::AuthenticityTimeout { .. }), "{err}");
    assert!(err.to_string().contains("did not arrive"), "{err}");

    // The POST names another order: it is not taken for ours.
    sim.add_fault(FaultRule::new(Some(SimEndpoint::Begin), FaultKind::AuthPostWrongOrder).times(1));
    let err = short
        .begin(RechargeType::Normal, &zero(), &ids(17_000_000_011))
        .await
        .unwrap_err();
    assert!(matches!(err, CaratError::AuthenticityTimeout { .. }), "{err}");
    server.abort();
}

#[tokio::test]
async fn a_token_signed_with_the_wrong_key_is_an_authentication_error() {
    let sim = start_sim_signature(SimCatalog::generate(GenSpec::default())).await;
    let wrong = carat_catalogd::carat::auth::JwtSigner::from_pem(
        other_rsa_key().0.as_bytes(),
        "wrong key",
        MERCHANT_ID,
        carat_catalogd::secret::Secret::new(MERCHANT_KEY.into()),
    )
    .unwrap();
    let c = CaratClient::new(
        client_settings(&sim),
        AuthMode::Signature(std::sync::Arc::new(wrong)),
    )
    .unwrap();
    let err = c
        .begin(RechargeType::Normal, &zero(), &ids(17_000_000_020))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("HTTP 401"), "{msg}");
    assert!(!msg.contains(MERCHANT_KEY), "the merchant key leaked: {msg}");

    // A wrong merchant key in the body, right signature: 401 as well.
    let mut settings = client_settings(&sim);
    settings.merchant_key = carat_catalogd::secret::Secret::new("WRONGKEY123".into());
    let c = CaratClient::new(settings, AuthMode::Signature(signer())).unwrap();
    let err = c
        .begin(RechargeType::Normal, &zero(), &ids(17_000_000_021))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth, "{err}");
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_tls_error() {
    let sim = start_sim_signature(SimCatalog::generate(GenSpec::default())).await;
    let mut settings = client_settings(&sim);
    settings.extra_ca_pem = None;
    let c = CaratClient::new(settings, AuthMode::Signature(signer())).unwrap();
    let err = c
        .begin(RechargeType::Normal, &zero(), &ids(17_000_000_030))
        .await
        .unwrap_err();
    assert!(matches!(err, CaratError::Tls { .. }), "{err:?}");
    assert_eq!(sim.total(), 0, "no request may reach an untrusted server");
}

/// Each fault, injected on the dealer listing, gives its own typed error.
#[tokio::test]
async fn every_fault_kind_maps_to_its_typed_error() {
    let sim = start_sim_signature(SimCatalog::generate(GenSpec {
        dealers: 2,
        ddds: 2,
        ranges: 2,
    }))
    .await;
    let mut settings = client_settings(&sim);
    settings.request_timeout = Duration::from_millis(1500);
    settings.max_body = 1024 * 1024;
    let c = CaratClient::new(settings, AuthMode::Signature(signer())).unwrap();
    let s = begin_normal(&c).await;
    let ddd = Ddd::parse("11").unwrap();
    let dealer = DealerCode::parse("001").unwrap();

    type Check = fn(&CaratError) -> bool;
    let cases: Vec<(SimEndpoint, FaultKind, Check)> = vec![
        (
            SimEndpoint::Dealers,
            FaultKind::Status {
                status: 503,
                retry_after: Some(7),
            },
            |e| {
                matches!(e, CaratError::Status { status: 503, retry_after: Some(d), .. } if d.as_secs() == 7)
                    && e.class() == ErrorClass::Transient
            },
        ),
        (
            SimEndpoint::Dealers,
            FaultKind::Status {
                status: 400,
                retry_after: None,
            },
            |e| matches!(e, CaratError::Status { status: 400, .. }) && e.class() == ErrorClass::Permanent,
        ),
        (
            SimEndpoint::Dealers,
            FaultKind::Status {
                status: 403,
                retry_after: None,
            },
            |e| e.class() == ErrorClass::Auth,
        ),
        (
            SimEndpoint::Dealers,
            FaultKind::Status {
                status: 404,
                retry_after: None,
            },
            |e| e.class() == ErrorClass::NitRejected,
        ),
        (
            SimEndpoint::Dealers,
            FaultKind::Esitef {
                code: "1".into(),
                message: "Campo NIT nulo".into(),
            },
            |e| matches!(e, CaratError::Esitef { code, message, .. } if code == "1" && message.contains("NIT nulo")),
        ),
        (SimEndpoint::Dealers, FaultKind::NitExpired, |e| {
            e.class() == ErrorClass::NitRejected
        }),
        (SimEndpoint::Dealers, FaultKind::Malformed, |e| {
            matches!(e, CaratError::Malformed { .. })
        }),
        (
            SimEndpoint::Dealers,
            FaultKind::TrailingGarbage,
            |e| matches!(e, CaratError::Malformed { detail, .. } if detail.contains("trailing")),
        ),
        (SimEndpoint::Dealers, FaultKind::Truncated, |e| {
            matches!(e, CaratError::Incomplete { .. }) && e.class() == ErrorClass::Transient
        }),
        (SimEndpoint::Dealers, FaultKind::Hang, |e| {
            matches!(e, CaratError::Timeout { .. })
        }),
        (SimEndpoint::Dealers, FaultKind::EndlessBody, |e| {
            matches!(e, CaratError::Timeout { .. })
        }),
        (SimEndpoint::Dealers, FaultKind::HugeBody { bytes: None }, |e| {
            matches!(e, CaratError::TooLarge { .. })
        }),
        (SimEndpoint::Dealers, FaultKind::Reset, |e| {
            e.class() == ErrorClass::Transient
        }),
        (
            SimEndpoint::Dealers,
            FaultKind::WrongTypes,
            |e| matches!(e, CaratError::Malformed { detail, .. } if detail.contains("dealers")),
        ),
        (
            SimEndpoint::Dealers,
            FaultKind::MissingField,
            |e| matches!(e, CaratError::InvalidField { source, .. } if source.path == "list_dealers_response.hashes"),
        ),
        (
            SimEndpoint::Dealers,
            FaultKind::BadCode,
            |e| matches!(e, CaratError::InvalidField { source, .. } if source.path == "list_dealers_response.dealers[0].code"),
        ),
        (
            SimEndpoint::BranchesNormal,
            FaultKind::NegativeAmount,
            |e| matches!(e, CaratError::InvalidField { source, .. } if source.problem.contains("negative")),
        ),
        (
            SimEndpoint::BranchesNormal,
            FaultKind::ReversedAmounts,
            |e| matches!(e, CaratError::InvalidField { source, .. } if source.problem.contains("greater than")),
        ),
    ];
    for (ep, kind, check) in cases {
        sim.clear_faults();
        sim.add_fault(FaultRule::new(Some(ep), kind.clone()).times(1));
        let err = match ep {
            SimEndpoint::Dealers => c.dealers(&s, &zero()).await.map(|_| ()),
            _ => c.branch_data_normal(&s, &dealer, &ddd, &zero()).await.map(|_| ()),
        }
        .expect_err(&format!("{kind:?} must fail"));
        assert!(check(&err), "{kind:?} gave {err:?}");
        // The fault fired once: the same call now succeeds.
        match ep {
            SimEndpoint::Dealers => c.dealers(&s, &zero()).await.map(|_| ()),
            _ => c.branch_data_normal(&s, &dealer, &ddd, &zero()).await.map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("after {kind:?}: {e}"));
    }

    // An unknown NIT: 404, classified as a dead NIT.
    let mut dead = s.clone();
    dead.nit = carat_catalogd::catalog::Nit::parse(&"a".repeat(64)).unwrap();
    let err = c.dealers(&dead, &zero()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::NitRejected, "{err}");

    // Latency is only a delay.
    sim.add_fault(FaultRule::new(Some(SimEndpoint::Dealers), FaultKind::Latency { ms: 300 }).times(1));
    let t = std::time::Instant::now();
    c.dealers(&s, &zero()).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn empty_dealer_list_and_mid_session_hash_change_are_visible() {
    let sim = start_sim_signature(SimCatalog::generate(GenSpec {
        dealers: 2,
        ddds: 2,
        ranges: 1,
    }))
    .await;
    let c = signature_client(&sim);
    let s = begin_normal(&c).await;
    sim.add_fault(FaultRule::new(Some(SimEndpoint::Dealers), FaultKind::EmptyDealers).times(1));
    assert!(c.dealers(&s, &zero()).await.unwrap().dealers.is_empty());
    sim.add_fault(FaultRule::new(Some(SimEndpoint::Dealers), FaultKind::HashChange).times(1));
    let d = c.dealers(&s, &zero()).await.unwrap();
    assert_ne!(d.hash, s.general_hash, "the answer carries the new hash");
}

#[tokio::test]
async fn settings_refuse_an_empty_ca_file() {
    let sim = start_sim_signature(SimCatalog::default()).await;
    let settings = ClientSettings {
        extra_ca_pem: Some(b"not a certificate".to_vec()),
        ..client_settings(&sim)
    };
    let err = CaratClient::new(settings, AuthMode::Signature(signer())).unwrap_err();
    assert!(err.to_string().contains("carat.ca_file"), "{err}");
}

/// POSTs for transactions the daemon did not start (the store's own sales
/// share the registered URL) are forwarded, or acknowledged when no
/// forward_url is set; ours are never forwarded. Carat gets 200 whatever
/// the store's endpoint answered (Carat's rule: "200 OK").
#[tokio::test]
async fn foreign_authenticity_posts_are_forwarded_or_acknowledged() {
    use carat_catalogd::carat::auth::{AuthenticityReceiver, ReceiverSettings};
    use std::sync::{Arc, Mutex};
    // The store's own endpoint: records what it gets, answers 202.
    let got: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let g = got.clone();
    let store_app = axum::Router::new().route(
        "/carat/authenticity",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let g = g.clone();
            async move {
                let ct = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                g.lock().unwrap().push((ct, body));
                (axum::http::StatusCode::ACCEPTED, "stored")
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let store_port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, store_app).await.unwrap() });

    let serve = |rx: AuthenticityReceiver| async move {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(carat_catalogd::net::serve_tcp(
            l,
            None,
            rx.router(),
            std::future::pending(),
        ));
        format!("http://127.0.0.1:{port}/carat/authenticity")
    };
    let forwarding = AuthenticityReceiver::new(ReceiverSettings {
        merchant_id: MERCHANT_ID.into(),
        path: "/carat/authenticity".into(),
        forward_url: Some(
            format!("http://127.0.0.1:{store_port}/carat/authenticity")
                .parse()
                .unwrap(),
        ),
        allow_from: vec![],
    });
    let url = serve(forwarding.clone()).await;
    let http = reqwest::Client::new();
    let foreign = format!(
        "merchantUSN=555&merchantId={MERCHANT_ID}&orderId=SALE42&nit={}&generalHash=85E791AD85E791AD",
        "b".repeat(64)
    );
    let r = http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(foreign.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "Carat gets 200, not the store's 202");
    assert_eq!(
        got.lock().unwrap().as_slice(),
        &[("application/x-www-form-urlencoded".to_owned(), foreign.clone())]
    );

    // Ours: taken by the waiting session, not forwarded.
    let pending = forwarding.register("CATSYNC77", "77");
    let ours = format!(
        "merchantUSN=77&merchantId={MERCHANT_ID}&orderId=CATSYNC77&nit={}&generalHash=85E791AD85E791AD&extra=1",
        "c".repeat(64)
    );
    let r = http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(ours)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let grant = pending
        .wait(Duration::from_secs(1))
        .await
        .expect("the session got its NIT");
    assert_eq!(grant.nit, "c".repeat(64));
    assert_eq!(got.lock().unwrap().len(), 1, "ours was not forwarded");

    // Without forward_url: acknowledged with 200.
    let plain = serve(receiver()).await;
    let r = http
        .post(&plain)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(foreign)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

/// Carat's rule is "200 OK": every POST on the receiver's path gets it,
/// also one that cannot be read (a duplicated field, a body over the
/// limit), and such a POST leaves a waiting session waiting.
#[tokio::test]
async fn the_receiver_answers_200_even_to_a_post_it_cannot_read() {
    let rx = receiver();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://127.0.0.1:{}/carat/authenticity",
        l.local_addr().unwrap().port()
    );
    tokio::spawn(carat_catalogd::net::serve_tcp(
        l,
        None,
        rx.router(),
        std::future::pending(),
    ));
    let pending = rx.register("CATSYNC88", "88");
    let http = reqwest::Client::new();
    let nit = "d".repeat(64);
    let bodies: Vec<Vec<u8>> = vec![
        // The same field twice: not a form the receiver can take.
        format!("orderId=CATSYNC88&orderId=CATSYNC88&merchantUSN=88&merchantId={MERCHANT_ID}&nit={nit}")
            .into_bytes(),
        b"\xff\xfe not a form at all %%%".to_vec(),
        vec![b'a'; 1024 * 1024],
        Vec::new(),
    ];
    for body in bodies {
        let n = body.len();
        let r = http
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "a {n}-byte body");
    }
    assert!(
        pending.wait(Duration::from_millis(200)).await.is_none(),
        "nothing unreadable was taken for the session's POST"
    );
}

/// Only a POST from `allow_from` is taken; one from elsewhere gets 403 and
/// leaves the session waiting. A POST naming another order (with the right
/// `merchantUSN`) is not taken either.
#[tokio::test]
async fn the_receiver_takes_only_allowed_peers_and_waiting_orders() {
    use carat_catalogd::carat::auth::{AuthenticityReceiver, ReceiverSettings};
    let serve = |allow: &str| {
        let rx = AuthenticityReceiver::new(ReceiverSettings {
            merchant_id: MERCHANT_ID.into(),
            path: "/carat/authenticity".into(),
            forward_url: None,
            allow_from: vec![carat_catalogd::net::Cidr::parse(allow).unwrap()],
        });
        async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!(
                "http://127.0.0.1:{}/carat/authenticity",
                l.local_addr().unwrap().port()
            );
            tokio::spawn(carat_catalogd::net::serve_tcp(
                l,
                None,
                rx.router(),
                std::future::pending(),
            ));
            (rx, url)
        }
    };
    let post = |url: String, order: &str| {
        // The guessed order's POST carries another NIT, so the grant shows
        // which POST the session took.
        let nit = if order.starts_with("CATSYNC1796") {
            "f"
        } else {
            "e"
        }
        .repeat(64);
        let body = format!(
            "merchantUSN=91&merchantId={MERCHANT_ID}&orderId={order}&nit={nit}&generalHash=85E791AD85E791AD"
        );
        async move {
            reqwest::Client::new()
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let order = carat_catalogd::run::SessionIds::random_order_id("CATSYNC");

    let (rx, url) = serve("10.0.0.0/8").await;
    let pending = rx.register(&order, "91");
    assert_eq!(post(url, &order).await, 403, "not from an allowed network");
    assert!(pending.wait(Duration::from_millis(200)).await.is_none());

    let (rx, url) = serve("127.0.0.0/8").await;
    let pending = rx.register(&order, "91");
    assert_eq!(
        post(url.clone(), "CATSYNC17961158943").await,
        200,
        "a guessed order"
    );
    assert_eq!(post(url, &order).await, 200);
    let grant = pending
        .wait(Duration::from_secs(1))
        .await
        .expect("the waiting order is taken");
    assert_eq!(grant.nit, "e".repeat(64));
}

/// The receiver the daemon binds keeps its own, small connection limit: a
/// flood of idle connections gets a JSON 503, not the daemon's descriptors.
#[tokio::test]
async fn the_daemon_receiver_refuses_a_flood_with_503() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "merchant_key", MERCHANT_KEY, 0o600);
    let cfg = write(
        dir.path(),
        "config.toml",
        &format!(
            "[carat]\nbase_url = \"https://localhost:1/e-sitef\"\nmerchant_id = \"{MERCHANT_ID}\"\n\
             merchant_key_file = \"{}/merchant_key\"\nauth = \"authenticity_post\"\n\
             [carat.authenticity_post]\nlisten = \"127.0.0.1:0\"\nallow_from = \"127.0.0.1, ::1\"\n",
            dir.path().display()
        ),
        0o600,
    );
    let cfg = carat_catalogd::config::Config::load_with_env(&cfg, Default::default()).unwrap();
    let (_, rx) = carat_catalogd::app::build_client(&cfg, None).unwrap();
    let bound = carat_catalogd::app::bind_receiver(&cfg, rx.as_ref().unwrap())
        .await
        .unwrap();
    let addr = bound.local_addr().unwrap();
    let _task = bound.serve(std::future::pending());
    let limit = carat_catalogd::carat::auth::RECEIVER_LIMITS.max_connections;
    let mut idle = vec![];
    for _ in 0..limit {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = extra
        .write_all(b"POST /carat/authenticity HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let mut got = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), extra.read_to_string(&mut got)).await;
    assert!(got.starts_with("HTTP/1.1 503"), "{got:?}");
    assert!(got.contains("\"overloaded\""), "{got}");
}

/// Connects to `addr` from the loopback address `from` (any 127.x.y.z is
/// this machine's), so one test has a peer inside `allow_from` and one
/// outside.
async fn connect_from(from: [u8; 4], addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind((std::net::Ipv4Addr::from(from), 0).into()).unwrap();
    s.connect(addr).await.unwrap()
}

/// What the receiver sends on `c` until it closes (5 s at most; `None`:
/// still open then).
async fn until_closed(c: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut got = vec![];
    match tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await {
        Ok(_) => Some(got),
        Err(_) => None,
    }
}

/// A peer outside `allow_from` is closed at accept: it never holds one of
/// the receiver's connection slots (a flood from outside cannot lock
/// Carat's POST out), even when it sends nothing; a peer inside is served.
/// `allow_from` is 127.0.0.2 alone: 127.0.0.1 is outside.
#[tokio::test]
async fn peers_outside_allow_from_are_closed_before_taking_a_slot() {
    use carat_catalogd::carat::auth::{AuthenticityReceiver, ReceiverSettings};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const INSIDE: [u8; 4] = [127, 0, 0, 2];
    const OUTSIDE: [u8; 4] = [127, 0, 0, 1];
    let rx = AuthenticityReceiver::new(ReceiverSettings {
        merchant_id: MERCHANT_ID.into(),
        path: "/carat/authenticity".into(),
        forward_url: None,
        allow_from: vec![],
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let limits = carat_catalogd::net::Limits {
        max_connections: 2,
        ..carat_catalogd::carat::auth::RECEIVER_LIMITS
    };
    tokio::spawn(carat_catalogd::net::serve_tcp_with(
        l,
        None,
        rx.router(),
        limits,
        vec![carat_catalogd::net::Cidr::parse("127.0.0.2/32").unwrap()],
        std::future::pending(),
    ));

    // Both slots held by idle peers from inside: a peer from outside is
    // closed without a byte. Had it been given a slot first (and closed
    // after), there would be none for it: it would get the 503 of a full
    // receiver instead.
    let mut held = vec![];
    for _ in 0..2 {
        held.push(connect_from(INSIDE, addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A request from each: the full receiver answers its 503 once it read
    // the request head.
    let request = b"POST /carat/authenticity HTTP/1.1\r\nhost: x\r\n\r\n";
    let mut over = connect_from(INSIDE, addr).await;
    over.write_all(request).await.unwrap();
    let got = until_closed(&mut over)
        .await
        .expect("a full receiver answers at once");
    assert!(
        got.starts_with(b"HTTP/1.1 503"),
        "the slots are taken: {}",
        String::from_utf8_lossy(&got)
    );
    let mut outside = connect_from(OUTSIDE, addr).await;
    let _ = outside.write_all(request).await;
    let got = until_closed(&mut outside)
        .await
        .expect("a peer outside allow_from was kept open (it would hold a slot for the head timeout)");
    assert!(
        got.is_empty(),
        "a peer outside allow_from went through the slot count: {}",
        String::from_utf8_lossy(&got)
    );
    drop(held);

    // A flood from outside, its connections kept open on this side: each
    // is closed at once, and meanwhile a peer inside is served (its POST
    // answered 200 and handed to the waiting session).
    let mut flood = vec![];
    for _ in 0..20 {
        let mut c = connect_from(OUTSIDE, addr).await;
        let mut b = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(2), c.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!(
                "a peer outside allow_from got an answer, not a close: {}",
                String::from_utf8_lossy(&b[..n])
            ),
            Err(_) => {
                panic!("a peer outside allow_from was kept open (it would hold a slot for the head timeout)")
            }
        }
        flood.push(c);
    }
    let order = carat_catalogd::run::SessionIds::random_order_id("CATSYNC");
    let pending = rx.register(&order, "91");
    let body = format!(
        "merchantUSN=91&merchantId={MERCHANT_ID}&orderId={order}&nit={}&generalHash=85E791AD85E791AD",
        "e".repeat(64)
    );
    let mut inside = connect_from(INSIDE, addr).await;
    inside
        .write_all(
            format!(
                "POST /carat/authenticity HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
                 content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let got = until_closed(&mut inside)
        .await
        .expect("the allowed peer's answer");
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "a peer inside allow_from, during a flood from outside: {}",
        String::from_utf8_lossy(&got)
    );
    let grant = pending
        .wait(Duration::from_secs(1))
        .await
        .expect("the allowed peer's POST reached the waiting session");
    assert_eq!(grant.nit, "e".repeat(64));
    drop(flood);
}
