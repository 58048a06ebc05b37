use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::AUTHORIZATION;
use jsonwebtoken::EncodingKey;
use serde_json::{json, Value};

use super::*;

const SECRET: &[u8] = b"a test secret of thirty-two bytes";
static X_USER: HeaderName = HeaderName::from_static("x-user");

fn settings() -> JwtSettings {
    JwtSettings {
        keys: vec![KeySource::Secret(SECRET.to_vec())],
        algorithms: vec![Algorithm::HS256],
        issuer: None,
        audience: Vec::new(),
        leeway: Duration::ZERO,
        token: Token::Bearer(AUTHORIZATION),
        claim_headers: vec![("sub".to_owned(), X_USER.clone())],
    }
}

fn rule(settings: JwtSettings) -> JwtAuth {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(JwtAuth::new(settings)).unwrap()
}

/// A rule that requires issuer `https://issuer` and audience `api` or `admin`.
fn strict_rule() -> JwtAuth {
    rule(JwtSettings {
        issuer: Some("https://issuer".to_owned()),
        audience: vec!["api".to_owned(), "admin".to_owned()],
        ..settings()
    })
}

/// An HS256 token with this header and these claims, signed with `SECRET`.
fn token_with_header(header: &Value, claims: &Value) -> String {
    let message =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &EncodingKey::from_secret(SECRET), Algorithm::HS256).unwrap();
    format!("{message}.{signature}")
}

fn token(claims: &Value) -> String {
    token_with_header(&json!({"alg": "HS256", "typ": "JWT"}), claims)
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn in_an_hour() -> u64 {
    now() + 3600
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, HeaderValue::try_from(format!("Bearer {token}")).unwrap());
    headers
}

/// The outcome of the token in `claims` under `auth`, now.
fn outcome(auth: &JwtAuth, claims: &Value) -> Result<(), Option<&'static str>> {
    auth.authorize(&mut bearer(&token(claims)), now())
}

#[test]
fn a_valid_token_passes_and_sets_its_claim_headers_only() {
    let auth = rule(settings());
    let mut headers = bearer(&token(&json!({"sub": "alice", "exp": in_an_hour()})));
    headers.append(&X_USER, HeaderValue::from_static("mallory"));
    assert_eq!(auth.authorize(&mut headers, now()), Ok(()));
    assert_eq!(headers.get_all(&X_USER).iter().collect::<Vec<_>>(), [HeaderValue::from_static("alice")]);
    assert_eq!(auth.authorize(&mut HeaderMap::new(), now()), Err(None), "no token: a challenge without an error");
}

#[test]
fn configured_issuer_and_audience_are_required_claims() {
    let auth = strict_rule();
    let exp = in_an_hour();
    assert_eq!(outcome(&auth, &json!({"exp": exp, "iss": "https://issuer", "aud": "api"})), Ok(()));
    assert_eq!(outcome(&auth, &json!({"exp": exp, "iss": "https://issuer", "aud": ["x", "admin"]})), Ok(()));
    assert!(outcome(&auth, &json!({"exp": exp, "iss": "https://issuer"})).is_err(), "no aud");
    assert!(outcome(&auth, &json!({"exp": exp, "aud": "api"})).is_err(), "no iss");
    assert!(outcome(&auth, &json!({"exp": exp})).is_err(), "neither");
    assert!(outcome(&auth, &json!({"exp": exp, "iss": "https://other", "aud": "api"})).is_err());
    assert!(outcome(&auth, &json!({"exp": exp, "iss": "https://issuer", "aud": "other"})).is_err());

    let issuer_only = rule(JwtSettings { issuer: Some("https://issuer".to_owned()), ..settings() });
    assert!(outcome(&issuer_only, &json!({"exp": exp})).is_err(), "no iss with only an issuer configured");
    let audience_only = rule(JwtSettings { audience: vec!["api".to_owned()], ..settings() });
    assert!(outcome(&audience_only, &json!({"exp": exp})).is_err(), "no aud with only an audience configured");
}

#[test]
fn an_audience_that_is_not_a_string_or_strings_is_refused() {
    let auth = strict_rule();
    let exp = in_an_hour();
    for aud in
        [json!(5), json!({"api": true}), json!(null), json!(true), json!(["api", 5]), json!([]), json!([["api"]])]
    {
        let claims = json!({"exp": exp, "iss": "https://issuer", "aud": aud});
        assert!(outcome(&auth, &claims).is_err(), "aud {aud} was accepted");
    }
}

#[test]
fn an_issuer_that_is_not_a_string_is_refused() {
    let auth = strict_rule();
    let exp = in_an_hour();
    for iss in [json!(["https://issuer"]), json!(["https://issuer", "https://other"]), json!(7), json!(null)] {
        let claims = json!({"exp": exp, "iss": iss, "aud": "api"});
        assert!(outcome(&auth, &claims).is_err(), "iss {iss} was accepted");
    }
}

#[test]
fn a_duplicated_claim_is_refused() {
    let auth = strict_rule();
    let claims = format!(r#"{{"exp":{},"iss":"https://issuer","aud":"api","aud":5}}"#, in_an_hour());
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#);
    let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &EncodingKey::from_secret(SECRET), Algorithm::HS256).unwrap();
    assert!(auth.authorize(&mut bearer(&format!("{message}.{signature}")), now()).is_err());
}

#[test]
fn exp_and_nbf_that_are_not_numbers_are_refused() {
    let auth = rule(settings());
    let exp = in_an_hour();
    assert_eq!(outcome(&auth, &json!({"exp": exp, "nbf": now() - 10})), Ok(()));
    assert!(outcome(&auth, &json!({"exp": exp, "nbf": "99999999999"})).is_err(), "a future nbf as a string");
    assert!(outcome(&auth, &json!({"exp": exp, "nbf": "0"})).is_err());
    assert!(outcome(&auth, &json!({"exp": exp, "nbf": null})).is_err());
    assert!(outcome(&auth, &json!({"exp": exp, "nbf": [0]})).is_err());
    assert!(outcome(&auth, &json!({"exp": exp.to_string()})).is_err());
    assert!(outcome(&auth, &json!({"exp": null})).is_err());
    assert!(outcome(&auth, &json!({"exp": exp, "nbf": 99_999_999_999_u64})).is_err(), "a future nbf");
}

#[test]
fn a_fractional_expiry_still_expires_once_the_token_is_remembered() {
    let auth = rule(settings());
    let exp = in_an_hour();
    let mut headers = bearer(&token(&json!({"exp": exp as f64 + 0.5})));
    assert_eq!(auth.authorize(&mut headers.clone(), now()), Ok(()));
    assert_eq!(auth.authorize(&mut headers, exp + 1), Err(Some("the token is expired")));
}

#[test]
fn critical_header_parameters_are_refused() {
    let auth = rule(settings());
    let claims = json!({"sub": "alice", "exp": in_an_hour()});
    for header in [
        json!({"alg": "HS256", "crit": ["x-unknown"], "x-unknown": 1}),
        json!({"alg": "HS256", "crit": ["exp"], "exp": 1}),
        json!({"alg": "HS256", "crit": "x-unknown", "x-unknown": 1}),
        json!({"alg": "HS256", "crit": [7]}),
        json!({"alg": "HS256", "crit": []}),
        json!({"alg": "HS256", "crit": null}),
    ] {
        let token = token_with_header(&header, &claims);
        assert!(auth.authorize(&mut bearer(&token), now()).is_err(), "header {header} was accepted");
    }
    let token = token_with_header(&json!({"alg": "HS256", "x-unknown": 1}), &claims);
    assert_eq!(auth.authorize(&mut bearer(&token), now()), Ok(()), "an unknown parameter that is not critical");
}

#[test]
fn two_cookies_with_the_token_name_are_refused() {
    let auth = rule(JwtSettings { token: Token::Cookie("jwt".to_owned()), ..settings() });
    let good = token(&json!({"sub": "alice", "exp": in_an_hour()}));
    let other = token(&json!({"sub": "bob", "exp": in_an_hour()}));
    let cookies = |fields: &[String]| {
        let mut headers = HeaderMap::new();
        for field in fields {
            headers.append(http::header::COOKIE, HeaderValue::try_from(field.as_str()).unwrap());
        }
        headers
    };
    assert_eq!(auth.authorize(&mut cookies(&[format!("a=1; jwt={good}; b=2")]), now()), Ok(()));
    assert!(auth.authorize(&mut cookies(&[format!("jwt={good}; jwt={other}")]), now()).is_err());
    assert!(auth.authorize(&mut cookies(&[format!("jwt={good}"), format!("jwt={good}")]), now()).is_err());
    assert!(auth.authorize(&mut cookies(&[format!("jwt={other}"), format!("a=1; jwt={good}")]), now()).is_err());
    assert_eq!(auth.authorize(&mut cookies(&["a=1".to_owned()]), now()), Err(None));
}

#[test]
fn two_authorization_fields_are_refused() {
    let auth = rule(settings());
    let good = token(&json!({"sub": "alice", "exp": in_an_hour()}));
    let mut headers = bearer(&good);
    headers.append(AUTHORIZATION, HeaderValue::try_from(format!("Bearer {good}")).unwrap());
    assert!(auth.authorize(&mut headers, now()).is_err());
    let mut headers = bearer(&good);
    headers.append(AUTHORIZATION, HeaderValue::from_static("Basic YWxpY2U6c2VjcmV0"));
    assert!(auth.authorize(&mut headers, now()).is_err());
}
