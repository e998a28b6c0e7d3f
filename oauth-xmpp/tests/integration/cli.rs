//! The `oauth-xmpp` binary, run as a person would.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::XEP_EXAMPLE;

const XEP_BASE: &str = "iq&travelbot%40findmenow.tld%2Fbot%26feeds.worldgps.tld&oauth_consumer_key%3D0685bd9184jfhq22%26oauth_nonce%3D4572616e48616d6d65724c61686176%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D1218137833%26oauth_token%3Dad180jjd733klru7%26oauth_version%3D1.0";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str], stdin: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_oauth-xmpp"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("the binary ends");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8(out.stdout).expect("utf-8"),
        stderr: String::from_utf8(out.stderr).expect("utf-8"),
    }
}

#[test]
fn base_string_of_a_stanza_without_xmlns() {
    let r = run(&["base-string"], XEP_EXAMPLE);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, format!("{XEP_BASE}\n").as_str()),
        "{}",
        r.stderr
    );
}

#[test]
fn sign_fills_in_the_signature() {
    let unsigned = XEP_EXAMPLE.replace("9PQkM4YKgaM067wqrDGshXOwDW0=", "");
    let r = run(
        &[
            "sign",
            "--consumer-secret",
            "consumersecret",
            "--token-secret",
            "tokensecret",
        ],
        &unsigned,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_contains(
        &r.stdout,
        "<oauth_signature>9PQkM4YKgaM067wqrDGshXOwDW0=</oauth_signature>",
    );
    assert_contains(
        &r.stdout,
        "<subscribe jid='travelbot@findmenow.tld' node='bard_geoloc'/>",
    );
}

#[test]
fn sign_plaintext_with_an_xml_declaration() {
    let input = format!(
        "<?xml version='1.0'?>\n{}",
        XEP_EXAMPLE
            .replace("HMAC-SHA1", "PLAINTEXT")
            .replace("9PQkM4YKgaM067wqrDGshXOwDW0=", "")
    );
    let r = run(
        &["sign", "--consumer-secret=-cs", "--token-secret=a b"],
        &input,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_contains(
        &r.stdout,
        "<oauth_signature>-cs&amp;a%20b</oauth_signature>",
    );
}

#[test]
fn verify_valid() {
    let r = run(
        &[
            "verify",
            "--consumer-secret",
            "consumersecret",
            "--token-secret",
            "tokensecret",
            "--now",
            "1218137833",
        ],
        XEP_EXAMPLE,
    );
    assert_eq!((r.code, r.stdout.as_str()), (0, "valid\n"), "{}", r.stderr);
}

#[test]
fn verify_stale_prints_condition_reason_and_base_string() {
    let r = run(
        &[
            "verify",
            "--consumer-secret",
            "consumersecret",
            "--token-secret",
            "tokensecret",
            "--now",
            "1218141433",
            "--no-bare-jid",
        ],
        XEP_EXAMPLE,
    );
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stdout,
        format!(
            "condition: invalid-nonce (not-authorized, type auth)\n\
             reason: timestamp 1218137833 is 3600 s behind this server's clock; the window is ±300 s\n\
             base string: {XEP_BASE}\n"
        )
    );
}

#[test]
fn verify_wrong_secret_with_a_wider_window() {
    let r = run(
        &[
            "verify",
            "--consumer-secret=-wrong",
            "--token-secret",
            "tokensecret",
            "--now=1218141433",
            "--window=3600",
        ],
        XEP_EXAMPLE,
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stdout
            .starts_with("condition: invalid-signature (not-authorized, type auth)\n"),
        "{}",
        r.stdout
    );
    assert_contains(&r.stdout, &format!("base string: {XEP_BASE}\n"));
    assert!(!r.stdout.contains("9PQkM4YKgaM067wqrDGshXOwDW0") && !r.stdout.contains("-wrong"));
}

#[test]
fn verify_malformed_element_names_the_app_condition() {
    let doubled = XEP_EXAMPLE.replace(
        "</oauth_nonce>",
        "</oauth_nonce><oauth_nonce>x</oauth_nonce>",
    );
    let r = run(
        &["verify", "--consumer-secret", "c", "--now", "1218137833"],
        &doubled,
    );
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stdout,
        "condition: duplicated-parameter (bad-request, type modify)\nreason: the parameter oauth_nonce appears more than once\n"
    );
}

#[test]
fn http_sign_prints_base_string_then_signature() {
    let r = run(
        &[
            "http-sign",
            "--method",
            "GET",
            "--url",
            "http://photos.example.net/photos?file=vacation.jpg&size=original",
            "--consumer-key",
            "dpf43f3p2l4k3l03",
            "--consumer-secret",
            "kd94hf93k423kf44",
            "--token",
            "nnch734d00sl2jdk",
            "--token-secret",
            "pfkkdhi9sl3r4s00",
            "--nonce",
            "kllo9940pd9333jh",
            "--timestamp",
            "1191242096",
            "--param",
            "oauth_version=1.0",
        ],
        "",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "GET&http%3A%2F%2Fphotos.example.net%2Fphotos&file%3Dvacation.jpg%26oauth_consumer_key%3Ddpf43f3p2l4k3l03%26oauth_nonce%3Dkllo9940pd9333jh%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D1191242096%26oauth_token%3Dnnch734d00sl2jdk%26oauth_version%3D1.0%26size%3Doriginal\n\
         tR3+Ty81lMeYAr/Fid0kMTYa/WM=\n"
    );
}

#[test]
fn http_sign_plaintext_request_token_adds_nothing_unasked() {
    let r = run(
        &[
            "http-sign",
            "--method=post",
            "--url=https://photos.example.net/request_token",
            "--consumer-key=dpf43f3p2l4k3l03",
            "--consumer-secret=kd94hf93k423kf44",
            "--nonce=hsu94j3884jdopsl",
            "--timestamp=1191242090",
            "--signature-method=PLAINTEXT",
            "--param=oauth_callback=-x y",
        ],
        "",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "POST&https%3A%2F%2Fphotos.example.net%2Frequest_token&oauth_callback%3D-x%2520y%26oauth_consumer_key%3Ddpf43f3p2l4k3l03%26oauth_nonce%3Dhsu94j3884jdopsl%26oauth_signature_method%3DPLAINTEXT%26oauth_timestamp%3D1191242090\n\
         kd94hf93k423kf44&\n"
    );
}

#[test]
fn garbage_input_is_a_clear_error() {
    let r = run(&["base-string"], "<iq><unclosed></iq>");
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .starts_with("oauth-xmpp: the input is not one well-formed XML stanza:"),
        "{}",
        r.stderr
    );
    let r = run(&["base-string"], "<iq from='a' to='b'/><iq/>");
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (2, "oauth-xmpp: the input holds more than one stanza\n")
    );
    let r = run(&["base-string"], "<iq from='a' to='b'/>");
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (
            2,
            "oauth-xmpp: the stanza carries no <oauth xmlns='urn:xmpp:oauth:0'/> element\n"
        )
    );
}

/// Asserts that `output` holds `needle`, showing the output when it does not.
#[track_caller]
fn assert_contains(output: &str, needle: &str) {
    assert!(output.contains(needle), "{needle:?} not in:\n{output}");
}
