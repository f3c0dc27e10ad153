//! How failures are told to the user: `error: <message>`, the server's detail, and a hint.

use cloud_api::{ClientError, ErrorCode};

const CONNECT_HINT: &str = "hint: check the endpoint with `cloud config show`, set it with \
    `cloud config set api-url URL` (or --api-url / CLOUD_API_URL), \
    or start the platform with ./scripts/quickstart.sh";

const KEY_HINT: &str = "hint: set an API key with `cloud config set api-key KEY` \
    (or --api-key / CLOUD_API_KEY); the admin key is in the scheduler data dir's `admin.key`";

/// The full text printed on stderr for a failed command, ending with a newline.
pub fn render(err: &anyhow::Error) -> String {
    let Some(client_err) = err.chain().find_map(|e| e.downcast_ref::<ClientError>()) else {
        return format!("error: {err:#}\n");
    };
    // Context added around the client error, outermost first.
    let context: String = err
        .chain()
        .take_while(|e| e.downcast_ref::<ClientError>().is_none())
        .map(|e| format!("{e}: "))
        .collect();
    let mut out = format!("error: {context}");
    match client_err {
        ClientError::Api {
            status,
            code,
            message,
            request_id,
        } => {
            out.push_str(&format!(
                "{message}\n  ({code}, HTTP {status}, request id {request_id})\n"
            ));
            match code {
                ErrorCode::Unauthorized => out.push_str(&format!("{KEY_HINT}\n")),
                ErrorCode::Forbidden => {
                    out.push_str("hint: this API key is not allowed to do that\n")
                }
                _ => {}
            }
        }
        ClientError::Unexpected { status, body } => {
            out.push_str(&format!(
                "unexpected response from the API (HTTP {status}): {}\n",
                body.trim()
            ));
            if *status == 401 {
                out.push_str(&format!("{KEY_HINT}\n"));
            } else {
                out.push_str("hint: is the configured API URL really The Cloud's scheduler? (`cloud config show`)\n");
            }
        }
        ClientError::Transport { url, source } => {
            let mut root: &dyn std::error::Error = source;
            while let Some(next) = root.source() {
                root = next;
            }
            out.push_str(&format!(
                "cannot reach the API at {url}: {root}\n{CONNECT_HINT}\n"
            ));
        }
        ClientError::BadUrl(url, why) => {
            out.push_str(&format!(
                "invalid API URL {url:?}: {why}\n\
                 hint: set a valid one with `cloud config set api-url http://HOST:PORT`\n"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: ErrorCode, message: &str) -> anyhow::Error {
        ClientError::Api {
            status: code.http_status(),
            code,
            message: message.into(),
            request_id: "req-42".into(),
        }
        .into()
    }

    #[test]
    fn api_errors_show_message_code_and_request_id() {
        let out = render(&api(ErrorCode::NotFound, "instance web not found"));
        assert!(out.starts_with("error: instance web not found\n"), "{out}");
        assert!(out.contains("not_found"), "{out}");
        assert!(out.contains("HTTP 404"), "{out}");
        assert!(out.contains("req-42"), "{out}");
        assert!(!out.contains("hint"), "{out}");
    }

    #[test]
    fn unauthorized_hints_at_the_key() {
        let out = render(&api(ErrorCode::Unauthorized, "missing API key"));
        assert!(out.contains("cloud config set api-key"), "{out}");
        assert!(out.contains("admin.key"), "{out}");
    }

    #[test]
    fn context_is_kept() {
        let err = api(ErrorCode::Conflict, "busy").context("cannot stop web");
        let out = render(&err);
        assert!(out.starts_with("error: cannot stop web: busy\n"), "{out}");
    }

    #[test]
    fn bad_url_and_plain_errors() {
        let err: anyhow::Error = ClientError::BadUrl("nope".into(), "relative URL".into()).into();
        let out = render(&err);
        assert!(out.contains("invalid API URL"), "{out}");
        assert!(out.contains("cloud config set api-url"), "{out}");
        let out = render(&anyhow::anyhow!("web is failed: boom"));
        assert_eq!(out, "error: web is failed: boom\n");
    }

    #[tokio::test]
    async fn connection_failures_name_the_url_and_hint_at_quickstart() {
        // A port nothing listens on: bind, read the port, close.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}");
        let client = cloud_api::Client::new(&url, None).unwrap();
        let err: anyhow::Error = client.instance_list().await.unwrap_err().into();
        let out = render(&err);
        assert!(
            out.contains(&format!("cannot reach the API at {url}")),
            "{out}"
        );
        assert!(out.contains("quickstart.sh"), "{out}");
        assert!(out.contains("cloud config set api-url"), "{out}");
    }
}
