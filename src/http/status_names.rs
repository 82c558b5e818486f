//! The status page's "Follow a name" form: `POST /admin/resolve` with `name` (and `callback`):
//! what the name stands for, and the named hub's answer to the subscribe request when a
//! callback was given (the same as `POST /admin/api/resolve`).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::AppState;
use super::status_page::{action_guard, esc, header_html, page};

#[derive(Deserialize)]
pub struct NameForm {
    name: String,
    #[serde(default)]
    callback: String,
}

pub async fn resolve(
    req: HttpRequest,
    form: web::Form<NameForm>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(r) = action_guard(&req, &state) {
        return r;
    }
    let callback = match form.callback.trim() {
        "" => None,
        c => match crate::urls::HttpUrl::parse(c) {
            Ok(u) => Some(u.to_string()),
            Err(e) => {
                return page(
                    StatusCode::BAD_REQUEST,
                    "hubcast",
                    &format!(
                        "<h1><a href=\"/\">hubcast</a></h1><p>callback: {}</p>",
                        esc(&e.to_string())
                    ),
                );
            }
        },
    };
    let mut body = header_html(&state);
    body.push_str(&format!("<h2>{}</h2>", esc(form.name.trim())));
    let status =
        match super::admin_hosted::by_name(&state, &form.name, callback.as_deref(), None).await {
            Ok(v) => {
                let pretty = serde_json::to_string_pretty(&v).unwrap_or_default();
                body.push_str(&format!("<pre>{}</pre>", esc(&pretty)));
                StatusCode::OK
            }
            Err(e) => {
                body.push_str(&format!("<p class=failed>{}</p>", esc(&e.to_string())));
                StatusCode::BAD_GATEWAY
            }
        };
    page(status, "hubcast name", &body)
}
