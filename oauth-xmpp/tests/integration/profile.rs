//! One named test per rule of the project profile (`spec/profile.md` maps rule → test).

use oauth_xmpp::minidom::Element;
use oauth_xmpp::sign::sign_stanza_params;
use oauth_xmpp::{
    ErrorType, FixedClock, HttpRequest, MemoryCredentials, MemoryNonceStore, OAuthParams, Scope,
    Secret, SignatureMethod, SignedOver, StanzaError, StanzaRequest, StructureError, TokenKind,
    TokenRecord, TokenUse, Verifier, VerifierConfig, VerifyError, ns,
};

use crate::XEP_EXAMPLE;

const NOW: u64 = 1218137833;
const CONSUMER: &str = "0685bd9184jfhq22";
const TOKEN: &str = "ad180jjd733klru7";

fn example() -> Element {
    XEP_EXAMPLE
        .replacen("<iq ", "<iq xmlns='jabber:client' ", 1)
        .parse()
        .expect("example parses")
}

fn store() -> MemoryCredentials {
    let mut store = MemoryCredentials::default();
    store.add_consumer(CONSUMER, "consumersecret");
    store.add_access_token(
        TOKEN,
        "tokensecret",
        CONSUMER,
        "alice",
        Scope::parse("bard_geoloc /photos/alice/"),
    );
    store
}

fn verify_with(
    config: VerifierConfig,
    store: &MemoryCredentials,
    now: u64,
    stanza: &Element,
) -> Result<oauth_xmpp::Verified, VerifyError> {
    let nonces = MemoryNonceStore::default();
    Verifier::with_config(config, store, &nonces, FixedClock(now)).verify_stanza(stanza)
}

fn verify(stanza: &Element) -> Result<oauth_xmpp::Verified, VerifyError> {
    verify_with(VerifierConfig::default(), &store(), NOW, stanza)
}

/// The example's parameters, edited, then signed again over `from`/`to` (full JID).
fn resigned(edit: impl FnOnce(&mut OAuthParams)) -> Element {
    let stanza = example();
    let request = StanzaRequest::from_stanza(&stanza).unwrap().unwrap();
    let mut params = request.params;
    edit(&mut params);
    sign_stanza_params(
        &mut params,
        "iq",
        &request.from,
        &request.to,
        &Secret::new("consumersecret"),
        &Secret::new("tokensecret"),
    );
    with_oauth(params.to_element())
}

/// The example IQ with its `<oauth/>` replaced by `oauth`.
fn with_oauth(oauth: Element) -> Element {
    let mut stanza = example();
    let pubsub = stanza
        .get_child_mut("pubsub", "http://jabber.org/protocol/pubsub")
        .unwrap();
    pubsub.remove_child("oauth", ns::OAUTH);
    pubsub.append_child(oauth);
    stanza
}

/// The example IQ with raw XML as the content of `<oauth/>`.
fn with_children(namespace: &str, children: &str) -> Element {
    let xml = format!(
        "<iq xmlns='jabber:client' from='travelbot@findmenow.tld/bot' to='feeds.worldgps.tld' type='set' id='s'>\
         <pubsub xmlns='http://jabber.org/protocol/pubsub'><subscribe node='bard_geoloc' jid='travelbot@findmenow.tld'/>\
         <oauth xmlns='{namespace}'>{children}</oauth></pubsub></iq>"
    );
    xml.parse().unwrap()
}

const CHILDREN: &str = "<oauth_consumer_key>0685bd9184jfhq22</oauth_consumer_key>\
    <oauth_nonce>4572616e48616d6d65724c61686176</oauth_nonce>\
    <oauth_signature>9PQkM4YKgaM067wqrDGshXOwDW0=</oauth_signature>\
    <oauth_signature_method>HMAC-SHA1</oauth_signature_method>\
    <oauth_timestamp>1218137833</oauth_timestamp>\
    <oauth_token>ad180jjd733klru7</oauth_token>\
    <oauth_version>1.0</oauth_version>";

fn structure_error(result: Result<oauth_xmpp::Verified, VerifyError>) -> StructureError {
    match result {
        Err(VerifyError::Structure(e)) => e,
        other => panic!("expected a structure error, got {other:?}"),
    }
}

fn app(result: Result<oauth_xmpp::Verified, VerifyError>) -> (&'static str, Option<&'static str>) {
    let e = result.expect_err("must be refused").stanza_error();
    (e.condition, e.app_condition)
}

// ---- The <oauth/> element ----

#[test]
fn element_written_in_urn_xmpp_oauth_0() {
    let element = with_children(ns::OAUTH_TMP, CHILDREN);
    let request = StanzaRequest::from_stanza(&element).unwrap().unwrap();
    assert_eq!(request.params.to_element().ns(), "urn:xmpp:oauth:0");
}

#[test]
fn element_alias_urn_xmpp_tmp_oauth_accepted() {
    assert!(verify(&with_children("urn:xmpp:tmp:oauth", CHILDREN)).is_ok());
}

#[test]
fn element_alias_urn_xmpp_oauth_accepted() {
    assert!(verify(&with_children("urn:xmpp:oauth", CHILDREN)).is_ok());
}

#[test]
fn element_in_unknown_namespace_is_not_oauth() {
    assert!(matches!(
        verify(&with_children("urn:example:other", CHILDREN)),
        Err(VerifyError::TokenRequired)
    ));
}

#[test]
fn element_missing_any_required_child_is_missing_parameter() {
    for name in [
        "oauth_consumer_key",
        "oauth_nonce",
        "oauth_signature",
        "oauth_signature_method",
        "oauth_timestamp",
        "oauth_token",
    ] {
        let children: String = CHILDREN
            .split_inclusive(&format!("</{name}>"))
            .map(|part| match part.find(&format!("<{name}>")) {
                Some(start) if part.ends_with(&format!("</{name}>")) => &part[..start],
                _ => part,
            })
            .collect();
        let result = verify(&with_children(ns::OAUTH, &children));
        assert_eq!(
            app(verify(&with_children(ns::OAUTH, &children))),
            ("bad-request", Some("missing-parameter")),
            "{name}"
        );
        assert_eq!(
            structure_error(result),
            StructureError::MissingParameter(match name {
                "oauth_consumer_key" => "oauth_consumer_key",
                "oauth_nonce" => "oauth_nonce",
                "oauth_signature" => "oauth_signature",
                "oauth_signature_method" => "oauth_signature_method",
                "oauth_timestamp" => "oauth_timestamp",
                _ => "oauth_token",
            })
        );
    }
}

#[test]
fn element_version_is_optional() {
    let stanza = resigned(|p| p.version = false);
    assert!(!String::from(&stanza).contains("oauth_version"));
    assert!(verify(&stanza).is_ok());
}

#[test]
fn element_version_other_than_1_0_is_unsupported_parameter() {
    let children = CHILDREN.replace(
        "<oauth_version>1.0</oauth_version>",
        "<oauth_version>2.0</oauth_version>",
    );
    let result = verify(&with_children(ns::OAUTH, &children));
    assert_eq!(
        app(verify(&with_children(ns::OAUTH, &children))),
        ("bad-request", Some("unsupported-parameter"))
    );
    assert_eq!(
        structure_error(result),
        StructureError::UnsupportedVersion("2.0".into())
    );
}

#[test]
fn element_text_is_trimmed_of_xml_whitespace() {
    let children = CHILDREN.replace(">0685bd9184jfhq22<", ">\n\t 0685bd9184jfhq22 \r\n<");
    assert!(verify(&with_children(ns::OAUTH, &children)).is_ok());
}

#[test]
fn element_duplicated_child_is_duplicated_parameter() {
    let children = format!("{CHILDREN}<oauth_nonce>again</oauth_nonce>");
    let result = verify(&with_children(ns::OAUTH, &children));
    assert_eq!(
        app(verify(&with_children(ns::OAUTH, &children))),
        ("bad-request", Some("duplicated-parameter"))
    );
    assert_eq!(
        structure_error(result),
        StructureError::DuplicatedParameter("oauth_nonce".into())
    );
}

#[test]
fn element_two_oauth_elements_are_duplicated_parameter() {
    let mut stanza = with_children(ns::OAUTH, CHILDREN);
    let oauth = with_children(ns::OAUTH, CHILDREN);
    stanza.append_child(
        oauth
            .get_child("pubsub", "http://jabber.org/protocol/pubsub")
            .unwrap()
            .get_child("oauth", ns::OAUTH)
            .unwrap()
            .clone(),
    );
    assert_eq!(
        structure_error(verify(&stanza)),
        StructureError::DuplicatedParameter("oauth".into())
    );
}

#[test]
fn element_unknown_child_is_unsupported_parameter() {
    let children = format!("{CHILDREN}<oauth_callback>oob</oauth_callback>");
    assert_eq!(
        app(verify(&with_children(ns::OAUTH, &children))),
        ("bad-request", Some("unsupported-parameter"))
    );
    assert_eq!(
        structure_error(verify(&with_children(ns::OAUTH, &children))),
        StructureError::UnsupportedParameter("oauth_callback".into())
    );
}

#[test]
fn element_child_in_other_namespace_is_unsupported_parameter() {
    let children = format!("{CHILDREN}<extra xmlns='urn:example'/>");
    assert_eq!(
        structure_error(verify(&with_children(ns::OAUTH, &children))),
        StructureError::UnsupportedParameter("extra".into())
    );
}

#[test]
fn element_unknown_method_is_unsupported_signature_method() {
    for method in ["PLAINTEXT+HMAC-SHA1", "RSA-SHA1", "hmac-sha1", ""] {
        let children = CHILDREN.replace(">HMAC-SHA1<", &format!(">{method}<"));
        assert_eq!(
            app(verify(&with_children(ns::OAUTH, &children))),
            ("bad-request", Some("unsupported-signature-method")),
            "{method}"
        );
    }
}

#[test]
fn element_percent_escaped_signature_is_tolerated() {
    let children = CHILDREN.replace(
        "9PQkM4YKgaM067wqrDGshXOwDW0=",
        "9PQkM4YKgaM067wqrDGshXOwDW0%3D",
    );
    assert!(verify(&with_children(ns::OAUTH, &children)).is_ok());
}

#[test]
fn element_round_trips_exactly() {
    let xml = format!("<oauth xmlns='urn:xmpp:oauth:0'>{CHILDREN}</oauth>");
    let element: Element = xml.parse().unwrap();
    let params = OAuthParams::from_element(&element).unwrap();
    assert_eq!(
        String::from(&params.to_element()),
        xml.replace('\'', "\"")
            .replace("xmlns=\"urn:xmpp:oauth:0\"", "xmlns='urn:xmpp:oauth:0'")
    );
    assert_eq!(
        OAuthParams::from_element(&params.to_element()).unwrap(),
        params
    );
}

// ---- The stanza base string ----

#[test]
fn base_string_reproduces_the_xep_example_signature() {
    let request = StanzaRequest::from_stanza(&example()).unwrap().unwrap();
    assert_eq!(
        request.base_string(),
        "iq&travelbot%40findmenow.tld%2Fbot%26feeds.worldgps.tld&oauth_consumer_key%3D0685bd9184jfhq22%26oauth_nonce%3D4572616e48616d6d65724c61686176%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D1218137833%26oauth_token%3Dad180jjd733klru7%26oauth_version%3D1.0"
    );
    let proof = verify(&example()).unwrap();
    assert_eq!(proof.signed_over(), SignedOver::FullJid);
}

#[test]
fn base_string_from_comes_first_historic_signature_refused() {
    let children = CHILDREN.replace(
        "9PQkM4YKgaM067wqrDGshXOwDW0=",
        "Z0F5zmPWwbunk5dc2hNBn1NgBj4=",
    );
    assert_eq!(
        app(verify(&with_children(ns::OAUTH, &children))),
        ("not-authorized", Some("invalid-signature"))
    );
}

#[test]
fn base_string_qname_is_lower_case() {
    // A signature made over an upper-cased "IQ" (the RFC 5849 habit for methods) is refused.
    let request = StanzaRequest::from_stanza(&example()).unwrap().unwrap();
    let upper = request.base_string().replacen("iq&", "IQ&", 1);
    let sig = oauth_xmpp::signature::sign(
        SignatureMethod::HmacSha1,
        &upper,
        &Secret::new("consumersecret"),
        &Secret::new("tokensecret"),
    );
    let children = CHILDREN.replace("9PQkM4YKgaM067wqrDGshXOwDW0=", &sig);
    assert_eq!(
        app(verify(&with_children(ns::OAUTH, &children))),
        ("not-authorized", Some("invalid-signature"))
    );
}

#[test]
fn base_string_bare_jid_signature_accepted_when_enabled() {
    let stanza = example();
    let request = StanzaRequest::from_stanza(&stanza).unwrap().unwrap();
    let sig = oauth_xmpp::signature::sign(
        SignatureMethod::HmacSha1,
        &request.bare_jid_base_string(),
        &Secret::new("consumersecret"),
        &Secret::new("tokensecret"),
    );
    let bare_signed = with_children(
        ns::OAUTH,
        &CHILDREN.replace("9PQkM4YKgaM067wqrDGshXOwDW0=", &sig),
    );
    assert_eq!(
        verify(&bare_signed).unwrap().signed_over(),
        SignedOver::BareJid
    );
    let strict = VerifierConfig {
        accept_bare_jid_signatures: false,
        ..VerifierConfig::default()
    };
    assert_eq!(
        app(verify_with(strict, &store(), NOW, &bare_signed)),
        ("not-authorized", Some("invalid-signature"))
    );
}

// ---- Methods and keys ----

#[test]
fn method_plaintext_signature_is_the_key() {
    let stanza = resigned(|p| p.signature_method = SignatureMethod::Plaintext);
    assert!(
        String::from(&stanza)
            .contains("<oauth_signature>consumersecret&amp;tokensecret</oauth_signature>")
    );
    assert!(verify(&stanza).is_ok());
}

#[test]
fn method_plaintext_can_be_switched_off() {
    let stanza = resigned(|p| p.signature_method = SignatureMethod::Plaintext);
    let config = VerifierConfig {
        allow_plaintext: false,
        ..VerifierConfig::default()
    };
    assert_eq!(
        app(verify_with(config, &store(), NOW, &stanza)),
        ("bad-request", Some("unsupported-signature-method"))
    );
}

#[test]
fn method_plaintext_still_requires_nonce_and_timestamp() {
    let children = CHILDREN.replace(">HMAC-SHA1<", ">PLAINTEXT<").replace(
        "<oauth_nonce>4572616e48616d6d65724c61686176</oauth_nonce>",
        "",
    );
    assert_eq!(
        structure_error(verify(&with_children(ns::OAUTH, &children))),
        StructureError::MissingParameter("oauth_nonce")
    );
}

#[test]
fn method_errors_never_show_secrets_or_the_expected_signature() {
    let children = CHILDREN.replace(
        "9PQkM4YKgaM067wqrDGshXOwDW0=",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    let error = verify(&with_children(ns::OAUTH, &children)).unwrap_err();
    let shown = format!(
        "{error} {error:?} {:?} {}",
        error.stanza_error(),
        error.http_problem("r").www_authenticate
    );
    for secret in [
        "consumersecret",
        "tokensecret",
        "9PQkM4YKgaM067wqrDGshXOwDW0",
    ] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
}

// ---- Order of checks ----

#[test]
fn order_unknown_consumer_before_token() {
    let stanza = resigned(|p| {
        p.consumer_key = "nobody".into();
        p.token = Some("no-such-token".into());
    });
    let error = verify(&stanza).unwrap_err();
    assert!(
        matches!(&error, VerifyError::UnknownConsumer(k) if k == "nobody"),
        "{error:?}"
    );
    assert_eq!(
        error.stanza_error().app_condition,
        Some("invalid-consumer-key")
    );
}

#[test]
fn order_revoked_consumer_is_invalid_consumer_key() {
    let mut store = store();
    store.consumers.get_mut(CONSUMER).unwrap().revoked = true;
    let error = verify_with(VerifierConfig::default(), &store, NOW, &example()).unwrap_err();
    assert!(matches!(error, VerifyError::ConsumerRevoked(_)));
    assert_eq!(
        error.stanza_error().app_condition,
        Some("invalid-consumer-key")
    );
}

#[test]
fn order_token_unknown_revoked_expired_temporary_or_foreign_is_invalid_token() {
    let base = store();
    let record = base.tokens[TOKEN].clone();
    let cases: Vec<(&str, TokenRecord, fn(&VerifyError) -> bool)> = vec![
        (
            "revoked",
            TokenRecord {
                revoked: true,
                ..record.clone()
            },
            |e| matches!(e, VerifyError::TokenRevoked),
        ),
        (
            "used",
            TokenRecord {
                used: true,
                ..record.clone()
            },
            |e| matches!(e, VerifyError::TokenUsed),
        ),
        (
            "expired",
            TokenRecord {
                expires_at: Some(NOW),
                ..record.clone()
            },
            |e| matches!(e, VerifyError::TokenExpired(NOW)),
        ),
        (
            "temporary",
            TokenRecord {
                kind: TokenKind::Temporary,
                ..record.clone()
            },
            |e| matches!(e, VerifyError::WrongTokenKind { .. }),
        ),
        (
            "foreign",
            TokenRecord {
                consumer_key: "other".into(),
                ..record.clone()
            },
            |e| matches!(e, VerifyError::TokenOfOtherConsumer),
        ),
    ];
    for (what, token, expected) in cases {
        let mut store = base.clone();
        store.tokens.insert(TOKEN.into(), token);
        let error = verify_with(VerifierConfig::default(), &store, NOW, &example()).unwrap_err();
        assert!(expected(&error), "{what}: {error:?}");
        assert_eq!(
            error.stanza_error().app_condition,
            Some("invalid-token"),
            "{what}"
        );
    }
    let mut store = base.clone();
    store.tokens.clear();
    let error = verify_with(VerifierConfig::default(), &store, NOW, &example()).unwrap_err();
    assert!(matches!(error, VerifyError::UnknownToken));
}

#[test]
fn order_timestamp_checked_before_signature() {
    let children = CHILDREN.replace(
        "9PQkM4YKgaM067wqrDGshXOwDW0=",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    let error = verify_with(
        VerifierConfig::default(),
        &store(),
        NOW + 3600,
        &with_children(ns::OAUTH, &children),
    )
    .unwrap_err();
    assert!(
        matches!(error, VerifyError::TimestampOutOfWindow { .. }),
        "{error:?}"
    );
}

#[test]
fn order_forged_request_does_not_use_up_the_nonce() {
    let store = store();
    let nonces = MemoryNonceStore::default();
    let verifier = Verifier::new(&store, &nonces, FixedClock(NOW));
    let forged = with_children(
        ns::OAUTH,
        &CHILDREN.replace(
            "9PQkM4YKgaM067wqrDGshXOwDW0=",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ),
    );
    assert!(matches!(
        verifier.verify_stanza(&forged),
        Err(VerifyError::InvalidSignature { .. })
    ));
    assert!(nonces.is_empty());
    assert!(verifier.verify_stanza(&example()).is_ok());
}

#[test]
fn order_scope_checked_last_other_owner_is_forbidden() {
    let proof = verify(&example()).unwrap();
    assert!(proof.authorize_node("bard_geoloc", "alice").is_ok());
    assert!(proof.authorize_node("/photos/alice/2024", "alice").is_ok());
    let other_owner = proof.authorize_node("bard_geoloc", "bob").unwrap_err();
    assert_eq!(
        other_owner.to_string(),
        "node \"bard_geoloc\" belongs to \"bob\", and the token was granted by \"alice\""
    );
    let outside = proof
        .authorize_node("/location/alice", "alice")
        .unwrap_err();
    assert_eq!(
        outside.to_string(),
        "node \"/location/alice\" is outside the token's scope (bard_geoloc /photos/alice/)"
    );
    let e = outside.stanza_error();
    assert_eq!(
        (e.condition, e.error_type, e.app_condition),
        ("forbidden", ErrorType::Auth, None)
    );
}

// ---- Errors ----

#[test]
fn errors_no_oauth_is_token_required() {
    let mut stanza = example();
    stanza
        .get_child_mut("pubsub", "http://jabber.org/protocol/pubsub")
        .unwrap()
        .remove_child("oauth", ns::OAUTH);
    let e = verify(&stanza).unwrap_err().stanza_error();
    assert_eq!(
        (e.condition, e.error_type, e.app_condition),
        ("not-authorized", ErrorType::Auth, Some("token-required"))
    );
}

#[test]
fn errors_table_condition_type_and_app_condition() {
    let table: Vec<(VerifyError, &str, ErrorType, Option<&str>)> = vec![
        (
            VerifyError::TokenRequired,
            "not-authorized",
            ErrorType::Auth,
            Some("token-required"),
        ),
        (
            VerifyError::UnknownConsumer("k".into()),
            "not-authorized",
            ErrorType::Auth,
            Some("invalid-consumer-key"),
        ),
        (
            VerifyError::UnknownToken,
            "not-authorized",
            ErrorType::Auth,
            Some("invalid-token"),
        ),
        (
            VerifyError::TimestampOutOfWindow {
                timestamp: 1,
                now: 1000,
                window: 300,
            },
            "not-authorized",
            ErrorType::Auth,
            Some("invalid-nonce"),
        ),
        (
            VerifyError::NonceUsed("n".into()),
            "not-authorized",
            ErrorType::Auth,
            Some("invalid-nonce"),
        ),
        (
            VerifyError::InvalidSignature {
                method: SignatureMethod::HmacSha1,
                bare_jid_tried: false,
            },
            "not-authorized",
            ErrorType::Auth,
            Some("invalid-signature"),
        ),
        (
            VerifyError::OutOfScope("x".into()),
            "forbidden",
            ErrorType::Auth,
            None,
        ),
        (
            StructureError::DuplicatedParameter("x".into()).into(),
            "bad-request",
            ErrorType::Modify,
            Some("duplicated-parameter"),
        ),
        (
            StructureError::MissingParameter("x").into(),
            "bad-request",
            ErrorType::Modify,
            Some("missing-parameter"),
        ),
        (
            StructureError::UnsupportedParameter("x".into()).into(),
            "bad-request",
            ErrorType::Modify,
            Some("unsupported-parameter"),
        ),
        (
            StructureError::UnsupportedSignatureMethod("x".into()).into(),
            "bad-request",
            ErrorType::Modify,
            Some("unsupported-signature-method"),
        ),
    ];
    for (error, condition, error_type, app) in table {
        let e = error.stanza_error();
        assert_eq!(
            (e.condition, e.error_type, e.app_condition),
            (condition, error_type, app),
            "{error:?}"
        );
    }
}

#[test]
fn errors_timestamp_text_names_the_window() {
    let error =
        verify_with(VerifierConfig::default(), &store(), NOW + 3600, &example()).unwrap_err();
    assert_eq!(
        error.stanza_error().text,
        "timestamp 1218137833 is 3600 s behind this server's clock; the window is ±300 s"
    );
}

#[test]
fn errors_millisecond_timestamps_are_explained() {
    let stanza = resigned(|p| p.timestamp = format!("{NOW}000"));
    let text = verify(&stanza).unwrap_err().stanza_error().text;
    assert!(
        text.ends_with("; it looks like milliseconds: send seconds since 1970"),
        "{text}"
    );
}

#[test]
fn errors_stanza_error_element_is_exact() {
    let e = StanzaError {
        error_type: ErrorType::Auth,
        condition: "not-authorized",
        app_condition: Some("invalid-nonce"),
        text: "nonce \"a\" was already used".into(),
    };
    assert_eq!(
        String::from(&e.to_element("jabber:component:accept")),
        "<error xmlns='jabber:component:accept' type='auth'><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
         <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>nonce \"a\" was already used</text>\
         <invalid-nonce xmlns='urn:xmpp:oauth:0:errors'/></error>"
    );
}

#[test]
fn errors_http_answer_has_status_problem_and_www_authenticate() {
    let p = VerifyError::TimestampOutOfWindow {
        timestamp: 100,
        now: 1000,
        window: 300,
    }
    .http_problem("Example");
    assert_eq!(p.status, 401);
    assert_eq!(p.problem, Some("timestamp_refused"));
    assert_eq!(
        p.www_authenticate,
        "OAuth realm=\"Example\", oauth_problem=\"timestamp_refused\", oauth_acceptable_timestamps=\"700-1300\", \
         oauth_problem_advice=\"timestamp%20100%20is%20900%20s%20behind%20this%20server%27s%20clock%3B%20the%20window%20is%20%C2%B1300%20s\""
    );
    assert!(p.body.starts_with(
        "oauth_problem=timestamp_refused&oauth_acceptable_timestamps=700-1300&oauth_problem_advice="
    ));
    let missing =
        VerifyError::from(StructureError::MissingParameter("oauth_nonce")).http_problem("r");
    assert_eq!(
        (missing.status, missing.problem),
        (400, Some("parameter_absent"))
    );
    assert!(
        missing
            .www_authenticate
            .contains("oauth_parameters_absent=\"oauth_nonce\"")
    );
}

// ---- Replay protection ----

#[test]
fn replay_window_is_300_seconds_both_ways() {
    assert!(verify_with(VerifierConfig::default(), &store(), NOW + 300, &example()).is_ok());
    assert!(verify_with(VerifierConfig::default(), &store(), NOW - 300, &example()).is_ok());
    assert!(matches!(
        verify_with(VerifierConfig::default(), &store(), NOW + 301, &example()),
        Err(VerifyError::TimestampOutOfWindow { .. })
    ));
    assert!(matches!(
        verify_with(VerifierConfig::default(), &store(), NOW - 301, &example()),
        Err(VerifyError::TimestampOutOfWindow { .. })
    ));
}

#[test]
fn replay_same_stanza_twice_is_invalid_nonce() {
    let store = store();
    let nonces = MemoryNonceStore::default();
    let verifier = Verifier::new(&store, &nonces, FixedClock(NOW));
    verifier.verify_stanza(&example()).unwrap();
    let error = verifier.verify_stanza(&example()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "nonce \"4572616e48616d6d65724c61686176\" was already used with this consumer, token and timestamp"
    );
    assert_eq!(error.stanza_error().app_condition, Some("invalid-nonce"));
}

#[test]
fn replay_nonce_is_unique_per_timestamp() {
    let store = store();
    let nonces = MemoryNonceStore::default();
    let verifier = Verifier::new(&store, &nonces, FixedClock(NOW));
    verifier.verify_stanza(&example()).unwrap();
    let later = resigned(|p| p.timestamp = (NOW + 1).to_string());
    assert!(verifier.verify_stanza(&later).is_ok());
}

// ---- HTTP (RFC 5849) ----

#[test]
fn http_request_token_needs_no_token_and_refuses_one() {
    let mut store = MemoryCredentials::default();
    store.add_consumer("dpf43f3p2l4k3l03", "kd94hf93k423kf44");
    let nonces = MemoryNonceStore::default();
    let verifier = Verifier::new(&store, &nonces, FixedClock(1191242090));
    let authorization = "OAuth realm=\"Photos\", oauth_consumer_key=\"dpf43f3p2l4k3l03\", oauth_signature_method=\"PLAINTEXT\", \
        oauth_signature=\"kd94hf93k423kf44%26\", oauth_timestamp=\"1191242090\", oauth_nonce=\"hsu94j3884jdopsl\", oauth_version=\"1.0\", \
        oauth_callback=\"http%3A%2F%2Fprinter.example.com%2Fready\"";
    let request = HttpRequest {
        method: "POST",
        uri: "https://photos.example.net/request_token",
        authorization: Some(authorization),
        content_type: None,
        body: b"",
    };
    let proof = verifier.verify_http(&request, TokenUse::None).unwrap();
    assert_eq!(proof.callback(), Some("http://printer.example.com/ready"));
    assert!(proof.token().is_none());
    let again = verifier.verify_http(&request, TokenUse::None).unwrap_err();
    assert_eq!(again.http_problem("Photos").problem, Some("nonce_used"));
}

#[test]
fn http_core_1_0_photos_request_verifies() {
    let mut store = MemoryCredentials::default();
    store.add_consumer("dpf43f3p2l4k3l03", "kd94hf93k423kf44");
    store.add_access_token(
        "nnch734d00sl2jdk",
        "pfkkdhi9sl3r4s00",
        "dpf43f3p2l4k3l03",
        "jane",
        Scope::all(),
    );
    let nonces = MemoryNonceStore::default();
    let verifier = Verifier::new(&store, &nonces, FixedClock(1191242096));
    let request = HttpRequest {
        method: "GET",
        uri: "http://photos.example.net/photos?file=vacation.jpg&size=original",
        authorization: Some(
            "OAuth realm=\"http://photos.example.net/\", oauth_consumer_key=\"dpf43f3p2l4k3l03\", oauth_token=\"nnch734d00sl2jdk\", \
             oauth_signature_method=\"HMAC-SHA1\", oauth_signature=\"tR3%2BTy81lMeYAr%2FFid0kMTYa%2FWM%3D\", oauth_timestamp=\"1191242096\", \
             oauth_nonce=\"kllo9940pd9333jh\", oauth_version=\"1.0\"",
        ),
        content_type: None,
        body: b"",
    };
    let proof = verifier.verify_http(&request, TokenUse::Access).unwrap();
    assert_eq!(proof.owner(), Some("jane"));
    let temporary = Verifier::new(&store, &MemoryNonceStore::default(), FixedClock(1191242096))
        .verify_http(&request, TokenUse::Temporary)
        .unwrap_err();
    assert_eq!(
        temporary.to_string(),
        "the token is an access token, but this request needs a temporary (request) token"
    );
}

#[test]
fn http_parameters_in_two_places_are_duplicated() {
    let request = HttpRequest {
        method: "POST",
        uri: "http://h/p?oauth_nonce=a",
        authorization: Some("OAuth oauth_nonce=\"b\""),
        content_type: None,
        body: b"",
    };
    assert_eq!(
        request.collect().unwrap_err(),
        StructureError::DuplicatedParameter("oauth_nonce".into())
    );
}
