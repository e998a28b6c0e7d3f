//! `oauth-xmpp`: a command-line tool for people debugging XEP-0235 and RFC 5849 signatures.

use std::io::Read;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use oauth_xmpp::minidom::Element;
use oauth_xmpp::{
    FixedClock, MemoryCredentials, MemoryNonceStore, Scope, Secret, SignatureMethod, StanzaRequest,
    SystemClock, Verifier, VerifierConfig, base_string, ns, sign, signature,
};

/// Largest stanza read from standard input.
const MAX_INPUT: u64 = 1 << 20;

/// Sign, verify and explain OAuth 1.0 signatures carried over XMPP (XEP-0235) and HTTP
/// (RFC 5849).
///
/// Stanzas are read from standard input; a stanza without `xmlns` is taken as
/// `jabber:client`. Every value can be given as `--flag=value`, which works even when the
/// value starts with `-`.
#[derive(Debug, Parser)]
#[command(name = "oauth-xmpp", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the signature base string of the stanza on standard input (full `from` JID).
    BaseString,
    /// Print the stanza on standard input with `oauth_signature` filled in, for the method
    /// its `<oauth/>` element names.
    Sign {
        #[command(flatten)]
        secrets: Secrets,
    },
    /// Verify the stanza on standard input. Prints `valid` and exits 0, or prints the
    /// XEP-0235 condition, the reason and the base string, and exits 1.
    Verify {
        #[command(flatten)]
        secrets: Secrets,
        /// The time to check the timestamp against, in seconds since 1970 (default: now).
        #[arg(long, value_name = "UNIX", allow_hyphen_values = true)]
        now: Option<u64>,
        /// The timestamp window, in seconds either way.
        #[arg(long, value_name = "SECS", default_value_t = oauth_xmpp::replay::DEFAULT_WINDOW_SECS)]
        window: u64,
        /// Do not accept signatures over the bare `from` JID.
        #[arg(long)]
        no_bare_jid: bool,
        /// Refuse the PLAINTEXT method.
        #[arg(long)]
        no_plaintext: bool,
    },
    /// Sign an HTTP request (RFC 5849): prints the base string on one line and the
    /// signature on the next.
    HttpSign(HttpSign),
}

#[derive(Debug, clap::Args)]
struct Secrets {
    /// The consumer secret.
    #[arg(long, value_name = "S", allow_hyphen_values = true)]
    consumer_secret: String,
    /// The token secret (empty when not given).
    #[arg(long, value_name = "T", allow_hyphen_values = true, default_value = "")]
    token_secret: String,
}

#[derive(Debug, clap::Args)]
struct HttpSign {
    /// The HTTP method (upper-cased in the base string).
    #[arg(long, value_name = "M", allow_hyphen_values = true)]
    method: String,
    /// The absolute request URL; its query parameters are signed too.
    #[arg(long, value_name = "URL", allow_hyphen_values = true)]
    url: String,
    /// A further parameter, taken literally (already decoded); repeatable. May be an
    /// `oauth_*` parameter such as `oauth_callback`, `oauth_verifier` or `oauth_version`.
    #[arg(long = "param", value_name = "NAME=VALUE", allow_hyphen_values = true)]
    params: Vec<String>,
    /// The consumer key.
    #[arg(long, value_name = "K", allow_hyphen_values = true)]
    consumer_key: String,
    /// The consumer secret.
    #[arg(long, value_name = "S", allow_hyphen_values = true)]
    consumer_secret: String,
    /// The token.
    #[arg(
        long,
        value_name = "T",
        allow_hyphen_values = true,
        requires = "token_secret"
    )]
    token: Option<String>,
    /// The token secret.
    #[arg(
        long,
        value_name = "TS",
        allow_hyphen_values = true,
        requires = "token"
    )]
    token_secret: Option<String>,
    /// The nonce.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    nonce: String,
    /// The timestamp, as it is to be sent.
    #[arg(long, value_name = "TS", allow_hyphen_values = true)]
    timestamp: String,
    /// The signature method.
    #[arg(long, value_name = "METHOD", default_value = "HMAC-SHA1",
          value_parser = ["HMAC-SHA1", "PLAINTEXT"])]
    signature_method: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("oauth-xmpp: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::BaseString => {
            let stanza = read_stanza()?;
            let request = request_of(&stanza)?;
            println!("{}", request.base_string());
        }
        Command::Sign { secrets } => {
            let mut stanza = read_stanza()?;
            sign::sign_stanza_in_place(
                &mut stanza,
                &Secret::new(secrets.consumer_secret),
                &Secret::new(secrets.token_secret),
            )
            .map_err(|e| e.to_string())?;
            println!("{}", String::from(&stanza));
        }
        Command::Verify {
            secrets,
            now,
            window,
            no_bare_jid,
            no_plaintext,
        } => {
            let stanza = read_stanza()?;
            return Ok(verify(
                &stanza,
                secrets,
                now,
                window,
                !no_bare_jid,
                !no_plaintext,
            ));
        }
        Command::HttpSign(args) => http_sign(args)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(
    stanza: &Element,
    secrets: Secrets,
    now: Option<u64>,
    window: u64,
    bare_jid: bool,
    plaintext: bool,
) -> ExitCode {
    let config = VerifierConfig {
        window_secs: window,
        accept_bare_jid_signatures: bare_jid,
        allow_plaintext: plaintext,
    };
    // The consumer and token are the ones the stanza names: this tool checks signatures
    // and timestamps, not a registry of credentials.
    let request = StanzaRequest::from_stanza(stanza);
    let mut credentials = MemoryCredentials::default();
    if let Ok(Some(request)) = &request {
        let token = request.params.token.clone().unwrap_or_default();
        credentials.add_consumer(request.params.consumer_key.clone(), secrets.consumer_secret);
        credentials.add_access_token(
            token,
            secrets.token_secret,
            request.params.consumer_key.clone(),
            "",
            Scope::all(),
        );
    }
    let nonces = MemoryNonceStore::default();
    let result = match now {
        Some(now) => Verifier::with_config(config, &credentials, &nonces, FixedClock(now))
            .verify_stanza(stanza),
        None => {
            Verifier::with_config(config, &credentials, &nonces, SystemClock).verify_stanza(stanza)
        }
    };
    match result {
        Ok(verified) => {
            match verified.signed_over() {
                oauth_xmpp::SignedOver::BareJid => {
                    println!("valid (signed over the bare from JID)")
                }
                _ => println!("valid"),
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            let e = error.stanza_error();
            match e.app_condition {
                Some(app) => println!(
                    "condition: {app} ({}, type {})",
                    e.condition,
                    e.error_type.as_str()
                ),
                None => println!(
                    "condition: {} (type {})",
                    e.condition,
                    e.error_type.as_str()
                ),
            }
            println!("reason: {}", e.text);
            if let Ok(Some(request)) = &request {
                println!("base string: {}", request.base_string());
                if bare_jid && base_string::bare_jid(&request.from) != request.from {
                    println!("bare-JID base string: {}", request.bare_jid_base_string());
                }
            }
            ExitCode::FAILURE
        }
    }
}

fn http_sign(args: HttpSign) -> Result<(), String> {
    let method = SignatureMethod::parse(&args.signature_method).map_err(|e| e.to_string())?;
    let query = match args.url.split_once('?') {
        Some((_, q)) => oauth_xmpp::encode::parse_form(q.split('#').next().unwrap_or(""))
            .map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let mut params: Vec<(String, String)> = query;
    for param in &args.params {
        let (name, value) = param
            .split_once('=')
            .ok_or_else(|| format!("--param {param:?} is not NAME=VALUE"))?;
        params.push((name.to_owned(), value.to_owned()));
    }
    params.push(("oauth_consumer_key".into(), args.consumer_key));
    params.push(("oauth_nonce".into(), args.nonce));
    params.push((
        "oauth_signature_method".into(),
        args.signature_method.clone(),
    ));
    params.push(("oauth_timestamp".into(), args.timestamp));
    if let Some(token) = args.token {
        params.push(("oauth_token".into(), token));
    }
    let base = base_string::http(
        &args.method,
        &args.url,
        params.iter().map(|(n, v)| (n.as_str(), v.as_str())),
    )
    .map_err(|e| e.to_string())?;
    let sig = signature::sign(
        method,
        &base,
        &Secret::new(args.consumer_secret),
        &Secret::new(args.token_secret.unwrap_or_default()),
    );
    println!("{base}");
    println!("{}", sig.as_str());
    Ok(())
}

/// The stanza's request, with a clear message when it has no `<oauth/>`.
fn request_of(stanza: &Element) -> Result<StanzaRequest, String> {
    StanzaRequest::from_unsigned_stanza(stanza)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "the stanza carries no <oauth xmlns='urn:xmpp:oauth:0'/> element".to_owned())
}

/// Reads one stanza from standard input. Its root may lack `xmlns` (then `jabber:client`).
fn read_stanza() -> Result<Element, String> {
    let mut input = String::new();
    std::io::stdin()
        .take(MAX_INPUT + 1)
        .read_to_string(&mut input)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    if input.len() as u64 > MAX_INPUT {
        return Err(format!("the stanza is larger than {MAX_INPUT} bytes"));
    }
    parse_stanza(&input)
}

/// Parses `text` inside a `jabber:client` wrapper, so that a root without `xmlns` inherits
/// it, and returns the one element it holds.
fn parse_stanza(text: &str) -> Result<Element, String> {
    let mut text = text.trim_start_matches('\u{feff}').trim_start();
    if text.starts_with("<?xml") {
        let end = text.find("?>").ok_or("the XML declaration is not closed")?;
        text = &text[end + 2..];
    }
    let wrapped = format!("<wrapper xmlns='{}'>{text}</wrapper>", ns::JABBER_CLIENT);
    let wrapper: Element = wrapped
        .parse()
        .map_err(|e| format!("the input is not one well-formed XML stanza: {e}"))?;
    let mut children = wrapper.children();
    match (children.next(), children.next()) {
        (Some(stanza), None) => Ok(stanza.clone()),
        (None, _) => Err("the input holds no XML element".to_owned()),
        (Some(_), Some(_)) => Err("the input holds more than one stanza".to_owned()),
    }
}
