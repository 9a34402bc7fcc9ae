//! ARM request paths → one [`Route`]. Pure: no I/O, never panics.
//!
//! ARM paths are case-insensitive in their keywords (`resourceGroups` arrives as
//! `resourcegroups`, the provider namespace in any casing) and generic clients send empty
//! segments (`providers/Microsoft.ContainerInstance//containerGroups/x`). Parsing therefore
//! drops empty segments, percent-decodes each one, matches keywords ignoring case and keeps the
//! user's casing of names.

use axum::http::Method;
use skiff_model::{names, ArmError, SUPPORTED_API_VERSIONS};

/// One container group, as named by the request path (user's casing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRef {
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
}

/// One virtual network, as named by the request path (user's casing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VnetRef {
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
}

/// Paging query of a list call: `$top` (page size) and `$skipToken` (opaque continuation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub top: Option<usize>,
    pub skip_token: Option<String>,
}

/// Every request the API serves. Each variant is one (method, path) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /providers/Microsoft.ContainerInstance/operations`
    ListProviderOperations,
    /// `GET /subscriptions/{s}/resourcegroups`
    ListResourceGroups { subscription: String, page: Page },
    /// `PUT /subscriptions/{s}/resourcegroups/{rg}`
    PutResourceGroup { subscription: String, resource_group: String },
    /// `GET /subscriptions/{s}/resourcegroups/{rg}`
    GetResourceGroup { subscription: String, resource_group: String },
    /// `HEAD /subscriptions/{s}/resourcegroups/{rg}`
    HeadResourceGroup { subscription: String, resource_group: String },
    /// `DELETE /subscriptions/{s}/resourcegroups/{rg}`
    DeleteResourceGroup { subscription: String, resource_group: String },
    /// `GET /subscriptions/{s}/providers/Microsoft.ContainerInstance/containerGroups`
    ListGroups { subscription: String, page: Page },
    /// `GET /subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.ContainerInstance/containerGroups`
    ListGroupsByResourceGroup { subscription: String, resource_group: String, page: Page },
    /// `GET P`
    GetGroup(GroupRef),
    /// `PUT P`
    PutGroup(GroupRef),
    /// `PATCH P` (tags only)
    PatchGroup(GroupRef),
    /// `DELETE P`
    DeleteGroup(GroupRef),
    /// `POST P/start`
    StartGroup(GroupRef),
    /// `POST P/stop`
    StopGroup(GroupRef),
    /// `POST P/restart`
    RestartGroup(GroupRef),
    /// `GET P/outboundNetworkDependenciesEndpoints`
    OutboundDependencies(GroupRef),
    /// `GET P/containers/{c}/logs?tail=N&timestamps=bool`
    ContainerLogs { group: GroupRef, container: String, tail: Option<usize>, timestamps: bool },
    /// `POST P/containers/{c}/exec`: a one-time websocket session (`crate::streams`)
    ContainerExec { group: GroupRef, container: String },
    /// `POST P/containers/{c}/attach`: a one-time websocket session of the container's output
    ContainerAttach { group: GroupRef, container: String },
    /// `GET /subscriptions/{s}/providers/Microsoft.ContainerInstance/locations/{loc}/operations/{id}`
    GetOperation { subscription: String, location: String, id: String },
    /// `GET …/locations/{loc}/operationResults/{id}`
    GetOperationResult { subscription: String, location: String, id: String },
    /// `GET …/locations/{loc}/usages`
    ListUsages { subscription: String, location: String },
    /// `GET …/locations/{loc}/capabilities`
    ListCapabilities { subscription: String, location: String },
    /// `GET …/locations/{loc}/cachedImages`
    ListCachedImages { subscription: String, location: String },
    /// Skiff extension: `GET P/containers/{c}/logstream?tail=N&timestamps=bool` streams the
    /// log as `text/plain` (chunked) and ends when the container terminates.
    ContainerLogStream { group: GroupRef, container: String, tail: Option<usize>, timestamps: bool },
    /// Skiff extension: `GET /subscriptions/{s}/providers/Microsoft.ContainerInstance/usageRecords?from=&to=&groupBy=&resourceGroup=`
    /// (`from`/`to` RFC 3339; `groupBy` = `resourceGroup` | `containerGroup`).
    UsageRecords { subscription: String, from: Option<String>, to: Option<String>, group_by: Option<String>, resource_group: Option<String> },
    /// Skiff extension: `GET /subscriptions/{s}/providers/Microsoft.ContainerInstance/events?follow=&resourceGroup=&since=`
    /// (the lifecycle event log; `follow=true` streams server-sent events).
    Events { subscription: String, resource_group: Option<String>, follow: bool, since: Option<String> },
    /// Skiff extension, Azure Monitor-shaped: `GET P/providers/Microsoft.Insights/metrics?metricnames=&interval=`
    /// (any `YYYY-MM-DD` api-version, as Azure Monitor's own differ from ACI's).
    GroupMetrics { group: GroupRef, metric_names: Option<String>, interval: Option<String> },
    /// `PUT /subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/{vnet}`
    PutVirtualNetwork(VnetRef),
    /// `GET …/virtualNetworks/{vnet}`
    GetVirtualNetwork(VnetRef),
    /// `DELETE …/virtualNetworks/{vnet}`
    DeleteVirtualNetwork(VnetRef),
    /// `PUT …/virtualNetworks/{vnet}/subnets/{subnet}`
    PutSubnet { vnet: VnetRef, subnet: String },
    /// `GET …/virtualNetworks/{vnet}/subnets/{subnet}`
    GetSubnet { vnet: VnetRef, subnet: String },
    /// `DELETE …/virtualNetworks/{vnet}/subnets/{subnet}`
    DeleteSubnet { vnet: VnetRef, subnet: String },
}

/// A parsed request: the route and the api-version it was called with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub route: Route,
    pub api_version: String,
}

/// Which api-versions a route accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VersionRule {
    /// `Microsoft.ContainerInstance` routes: one of [`SUPPORTED_API_VERSIONS`].
    ContainerInstance,
    /// `Microsoft.Resources` routes: any `YYYY-MM-DD[-preview]`.
    Resources,
}

const PROVIDER_LC: &str = "microsoft.containerinstance";
const NETWORK_LC: &str = "microsoft.network";

fn not_found(path: &str) -> ArmError {
    ArmError::new(404, "NotFound", format!("The requested resource '{path}' was not found."))
}

fn invalid_resource_type(path: &str) -> ArmError {
    ArmError::new(404, "InvalidResourceType", format!("The resource type of '{path}' could not be found in the namespace '{}'.", skiff_model::arm::PROVIDER))
}

fn invalid_namespace(ns: &str) -> ArmError {
    ArmError::new(404, "InvalidResourceNamespace", format!("The resource namespace '{ns}' is invalid."))
}

fn method_not_allowed(method: &Method, path: &str) -> ArmError {
    ArmError::new(405, "MethodNotAllowed", format!("The HTTP method '{method}' is not supported for '{path}'."))
}

/// The query parameters of a request, keys compared case-insensitively (first value wins).
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        Query(form_urlencoded::parse(query.unwrap_or("").as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }
}

fn is_date_version(v: &str) -> bool {
    let date = v.strip_suffix("-preview").unwrap_or(v);
    let b = date.as_bytes();
    b.len() == 10 && b[4] == b'-' && b[7] == b'-' && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

fn check_api_version(q: &Query, rule: VersionRule) -> Result<String, ArmError> {
    let Some(v) = q.get("api-version") else { return Err(ArmError::missing_api_version()) };
    let ok = match rule {
        VersionRule::ContainerInstance => SUPPORTED_API_VERSIONS.contains(&v),
        VersionRule::Resources => is_date_version(v),
    };
    if !ok {
        let supported: &[&str] = match rule {
            VersionRule::ContainerInstance => SUPPORTED_API_VERSIONS,
            VersionRule::Resources => &["YYYY-MM-DD", "YYYY-MM-DD-preview"],
        };
        return Err(ArmError::invalid_api_version(v, supported));
    }
    Ok(v.to_string())
}

fn page(q: &Query) -> Result<Page, ArmError> {
    let top = match q.get("$top") {
        None => None,
        Some(t) => match t.trim().parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(ArmError::bad_request("InvalidParameter", format!("The value '{t}' of '$top' is invalid: give a positive integer.")).with_target("$top")),
        },
    };
    Ok(Page { top, skip_token: q.get("$skipToken").map(str::to_string) })
}

fn location_ok(loc: &str) -> Result<(), ArmError> {
    if !loc.is_empty() && loc.len() <= 64 && loc.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-') {
        return Ok(());
    }
    Err(ArmError::bad_request("LocationNotAvailableForResourceType", format!("The provided location '{loc}' is not available.")))
}

/// Parse a request. Unknown path → 404 (`InvalidResourceType` / `InvalidResourceNamespace` /
/// `NotFound`), wrong method → 405, api-version missing or unsupported → 400, malformed
/// subscription / resource group / location → 400, bad query values → 400.
pub fn parse(method: &Method, path: &str, query: Option<&str>) -> Result<Routed, ArmError> {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let lc: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let kw: Vec<&str> = lc.iter().map(String::as_str).collect();
    let q = Query::parse(query);

    // (route, allowed methods, version rule); the route is built for the method given, and
    // only used when the method is allowed.
    let m = method.clone();
    let get = m == Method::GET;
    let (route, rule): (Option<Route>, VersionRule) = match kw.as_slice() {
        ["providers", ns, "operations"] if *ns == PROVIDER_LC => (get.then_some(Route::ListProviderOperations), VersionRule::ContainerInstance),
        ["providers", ns, ..] if *ns != PROVIDER_LC => return Err(invalid_namespace(&segs[1])),
        ["subscriptions", _, rest @ ..] => {
            let subscription = segs[1].clone();
            match rest {
                [] => return Err(not_found(path)),
                ["resourcegroups"] => {
                    names::validate_subscription_id(&subscription)?;
                    (get.then(|| Ok::<_, ArmError>(Route::ListResourceGroups { subscription, page: page(&q)? })).transpose()?, VersionRule::Resources)
                }
                ["resourcegroups", _] => {
                    names::validate_subscription_id(&subscription)?;
                    let resource_group = segs[3].clone();
                    names::validate_resource_group_name(&resource_group)?;
                    let r = match m {
                        Method::PUT => Some(Route::PutResourceGroup { subscription, resource_group }),
                        Method::GET => Some(Route::GetResourceGroup { subscription, resource_group }),
                        Method::HEAD => Some(Route::HeadResourceGroup { subscription, resource_group }),
                        Method::DELETE => Some(Route::DeleteResourceGroup { subscription, resource_group }),
                        _ => None,
                    };
                    (r, VersionRule::Resources)
                }
                ["providers", ns, rest @ ..] => {
                    if *ns != PROVIDER_LC {
                        return Err(invalid_namespace(&segs[3]));
                    }
                    names::validate_subscription_id(&subscription)?;
                    let r = match rest {
                        ["containergroups"] => get.then(|| Ok::<_, ArmError>(Route::ListGroups { subscription, page: page(&q)? })).transpose()?,
                        ["usagerecords"] => get.then(|| Route::UsageRecords {
                            subscription,
                            from: q.get("from").map(str::to_string),
                            to: q.get("to").map(str::to_string),
                            group_by: q.get("groupBy").map(str::to_string),
                            resource_group: q.get("resourceGroup").map(str::to_string),
                        }),
                        ["events"] => get.then(|| Route::Events {
                            subscription,
                            resource_group: q.get("resourceGroup").map(str::to_string),
                            follow: q.get("follow").is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1"),
                            since: q.get("since").map(str::to_string),
                        }),
                        ["locations", _, tail @ ..] => {
                            let location = segs[5].clone();
                            location_ok(&location)?;
                            match tail {
                                ["operations", _] => get.then(|| Route::GetOperation { subscription, location, id: segs[7].clone() }),
                                ["operationresults", _] => get.then(|| Route::GetOperationResult { subscription, location, id: segs[7].clone() }),
                                ["usages"] => get.then_some(Route::ListUsages { subscription, location }),
                                ["capabilities"] => get.then_some(Route::ListCapabilities { subscription, location }),
                                ["cachedimages"] => get.then_some(Route::ListCachedImages { subscription, location }),
                                _ => return Err(invalid_resource_type(path)),
                            }
                        }
                        _ => return Err(invalid_resource_type(path)),
                    };
                    (r, VersionRule::ContainerInstance)
                }
                ["resourcegroups", _, "providers", ns, rest @ ..] if *ns == NETWORK_LC => {
                    names::validate_subscription_id(&subscription)?;
                    let resource_group = segs[3].clone();
                    names::validate_resource_group_name(&resource_group)?;
                    let r = match rest {
                        ["virtualnetworks", _, tail @ ..] => {
                            let vnet = VnetRef { subscription, resource_group, name: segs[7].clone() };
                            match tail {
                                [] => match m {
                                    Method::PUT => Some(Route::PutVirtualNetwork(vnet)),
                                    Method::GET => Some(Route::GetVirtualNetwork(vnet)),
                                    Method::DELETE => Some(Route::DeleteVirtualNetwork(vnet)),
                                    _ => None,
                                },
                                ["subnets", _] => {
                                    let subnet = segs[9].clone();
                                    match m {
                                        Method::PUT => Some(Route::PutSubnet { vnet, subnet }),
                                        Method::GET => Some(Route::GetSubnet { vnet, subnet }),
                                        Method::DELETE => Some(Route::DeleteSubnet { vnet, subnet }),
                                        _ => None,
                                    }
                                }
                                _ => return Err(not_found(path)),
                            }
                        }
                        _ => return Err(not_found(path)),
                    };
                    (r, VersionRule::Resources)
                }
                ["resourcegroups", _, "providers", ns, rest @ ..] => {
                    if *ns != PROVIDER_LC {
                        return Err(invalid_namespace(&segs[5]));
                    }
                    names::validate_subscription_id(&subscription)?;
                    let resource_group = segs[3].clone();
                    names::validate_resource_group_name(&resource_group)?;
                    let g = |name: &String| GroupRef { subscription: subscription.clone(), resource_group: resource_group.clone(), name: name.clone() };
                    let r = match rest {
                        ["containergroups"] => get
                            .then(|| Ok::<_, ArmError>(Route::ListGroupsByResourceGroup { subscription: subscription.clone(), resource_group: resource_group.clone(), page: page(&q)? }))
                            .transpose()?,
                        ["containergroups", _] => {
                            let gr = g(&segs[7]);
                            match m {
                                Method::GET => Some(Route::GetGroup(gr)),
                                Method::PUT => Some(Route::PutGroup(gr)),
                                Method::PATCH => Some(Route::PatchGroup(gr)),
                                Method::DELETE => Some(Route::DeleteGroup(gr)),
                                _ => None,
                            }
                        }
                        ["containergroups", _, action] => {
                            let gr = g(&segs[7]);
                            let post = m == Method::POST;
                            match *action {
                                "start" => post.then_some(Route::StartGroup(gr)),
                                "stop" => post.then_some(Route::StopGroup(gr)),
                                "restart" => post.then_some(Route::RestartGroup(gr)),
                                "outboundnetworkdependenciesendpoints" => get.then_some(Route::OutboundDependencies(gr)),
                                _ => return Err(invalid_resource_type(path)),
                            }
                        }
                        ["containergroups", _, "containers", _, action] => {
                            let group = g(&segs[7]);
                            let container = segs[9].clone();
                            match *action {
                                "logs" | "logstream" if get => {
                                    let tail = match q.get("tail") {
                                        None => None,
                                        Some(t) => match t.trim().parse::<usize>() {
                                            Ok(n) => Some(n),
                                            Err(_) => {
                                                return Err(ArmError::bad_request("InvalidParameter", format!("The value '{t}' of 'tail' is invalid: give a non-negative integer.")).with_target("tail"))
                                            }
                                        },
                                    };
                                    let timestamps = match q.get("timestamps") {
                                        None => false,
                                        Some(t) if t.eq_ignore_ascii_case("true") => true,
                                        Some(t) if t.eq_ignore_ascii_case("false") => false,
                                        Some(t) => {
                                            return Err(ArmError::bad_request("InvalidParameter", format!("The value '{t}' of 'timestamps' is invalid: give 'true' or 'false'.")).with_target("timestamps"))
                                        }
                                    };
                                    if *action == "logstream" {
                                        Some(Route::ContainerLogStream { group, container, tail, timestamps })
                                    } else {
                                        Some(Route::ContainerLogs { group, container, tail, timestamps })
                                    }
                                }
                                "logs" | "logstream" => None,
                                "exec" => (m == Method::POST).then_some(Route::ContainerExec { group, container }),
                                "attach" => (m == Method::POST).then_some(Route::ContainerAttach { group, container }),
                                _ => return Err(invalid_resource_type(path)),
                            }
                        }
                        ["containergroups", _, "providers", "microsoft.insights", "metrics"] => get.then(|| Route::GroupMetrics {
                            group: g(&segs[7]),
                            metric_names: q.get("metricnames").map(str::to_string),
                            interval: q.get("interval").map(str::to_string),
                        }),
                        _ => return Err(invalid_resource_type(path)),
                    };
                    let rule = if matches!(r, Some(Route::GroupMetrics { .. })) { VersionRule::Resources } else { VersionRule::ContainerInstance };
                    (r, rule)
                }
                _ => return Err(not_found(path)),
            }
        }
        _ => return Err(not_found(path)),
    };
    let Some(route) = route else { return Err(method_not_allowed(method, path)) };
    let api_version = check_api_version(&q, rule)?;
    Ok(Routed { route, api_version })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const V: &str = "api-version=2023-05-01";
    const P: &str = "/subscriptions/Sub/resourceGroups/Demo/providers/Microsoft.ContainerInstance/containerGroups/web";

    fn gr() -> GroupRef {
        GroupRef { subscription: "Sub".into(), resource_group: "Demo".into(), name: "web".into() }
    }

    fn ok(method: Method, path: &str) -> Route {
        parse(&method, path, Some(V)).unwrap_or_else(|e| panic!("{method} {path}: {e}")).route
    }

    fn err(method: Method, path: &str, query: Option<&str>) -> ArmError {
        parse(&method, path, query).expect_err("should fail")
    }

    #[test]
    fn group_routes() {
        assert_eq!(ok(Method::GET, P), Route::GetGroup(gr()));
        assert_eq!(ok(Method::PUT, P), Route::PutGroup(gr()));
        assert_eq!(ok(Method::PATCH, P), Route::PatchGroup(gr()));
        assert_eq!(ok(Method::DELETE, P), Route::DeleteGroup(gr()));
        assert_eq!(ok(Method::POST, &format!("{P}/start")), Route::StartGroup(gr()));
        assert_eq!(ok(Method::POST, &format!("{P}/Stop")), Route::StopGroup(gr()));
        assert_eq!(ok(Method::POST, &format!("{P}/restart")), Route::RestartGroup(gr()));
        assert_eq!(ok(Method::GET, &format!("{P}/outboundNetworkDependenciesEndpoints")), Route::OutboundDependencies(gr()));
        assert_eq!(ok(Method::POST, &format!("{P}/containers/c1/exec")), Route::ContainerExec { group: gr(), container: "c1".into() });
        assert_eq!(ok(Method::POST, &format!("{P}/containers/c1/attach")), Route::ContainerAttach { group: gr(), container: "c1".into() });
        let r = parse(&Method::GET, &format!("{P}/containers/c1/logs"), Some("api-version=2023-05-01&tail=10&timestamps=True")).unwrap();
        assert_eq!(r.route, Route::ContainerLogs { group: gr(), container: "c1".into(), tail: Some(10), timestamps: true });
        let r = parse(&Method::GET, &format!("{P}/containers/c1/logStream"), Some("api-version=2023-05-01&tail=3")).unwrap();
        assert_eq!(r.route, Route::ContainerLogStream { group: gr(), container: "c1".into(), tail: Some(3), timestamps: false });
        assert_eq!(r.api_version, "2023-05-01");
    }

    #[test]
    fn case_insensitive_and_double_slash() {
        let odd = "/SUBSCRIPTIONS/Sub/resourcegroups/Demo/providers/microsoft.containerinstance//CONTAINERGROUPS/web/";
        assert_eq!(ok(Method::GET, odd), Route::GetGroup(gr()));
        let odd = "//subscriptions//Sub/resourceGroups/Demo/providers/Microsoft.ContainerInstance//containerGroups/web";
        assert_eq!(ok(Method::PUT, odd), Route::PutGroup(gr()));
        // Percent-encoded names are decoded.
        let enc = "/subscriptions/Sub/resourceGroups/my%28rg%29/providers/Microsoft.ContainerInstance/containerGroups/web";
        match ok(Method::GET, enc) {
            Route::GetGroup(g) => assert_eq!(g.resource_group, "my(rg)"),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn other_routes() {
        assert_eq!(ok(Method::GET, "/providers/Microsoft.ContainerInstance/operations"), Route::ListProviderOperations);
        assert_eq!(ok(Method::GET, "/subscriptions/s/resourcegroups"), Route::ListResourceGroups { subscription: "s".into(), page: Page::default() });
        assert_eq!(ok(Method::HEAD, "/subscriptions/s/resourcegroups/Rg"), Route::HeadResourceGroup { subscription: "s".into(), resource_group: "Rg".into() });
        assert_eq!(ok(Method::GET, "/subscriptions/s/providers/Microsoft.ContainerInstance/containerGroups"), Route::ListGroups { subscription: "s".into(), page: Page::default() });
        let base = "/subscriptions/s/providers/Microsoft.ContainerInstance/locations/westus";
        assert_eq!(ok(Method::GET, &format!("{base}/operations/abc")), Route::GetOperation { subscription: "s".into(), location: "westus".into(), id: "abc".into() });
        assert_eq!(ok(Method::GET, &format!("{base}/operationResults/abc")), Route::GetOperationResult { subscription: "s".into(), location: "westus".into(), id: "abc".into() });
        assert_eq!(ok(Method::GET, &format!("{base}/usages")), Route::ListUsages { subscription: "s".into(), location: "westus".into() });
        assert_eq!(ok(Method::GET, &format!("{base}/capabilities")), Route::ListCapabilities { subscription: "s".into(), location: "westus".into() });
        assert_eq!(ok(Method::GET, &format!("{base}/cachedImages")), Route::ListCachedImages { subscription: "s".into(), location: "westus".into() });
        let r = parse(&Method::GET, "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups", Some("api-version=2023-05-01&$top=5&$skipToken=abc")).unwrap();
        assert_eq!(r.route, Route::ListGroupsByResourceGroup { subscription: "s".into(), resource_group: "rg".into(), page: Page { top: Some(5), skip_token: Some("abc".into()) } });
    }

    #[test]
    fn errors() {
        assert_eq!(err(Method::GET, P, None).code, "MissingApiVersionParameter");
        assert_eq!(err(Method::GET, P, Some("api-version=2017-01-01")).code, "InvalidApiVersionParameter");
        assert_eq!(err(Method::GET, P, Some("api-version=2017-01-01")).status, 400);
        // Resource groups take any date version.
        assert!(parse(&Method::GET, "/subscriptions/s/resourcegroups/rg", Some("api-version=2021-04-01")).is_ok());
        assert_eq!(err(Method::GET, "/subscriptions/s/resourcegroups/rg", Some("api-version=latest")).code, "InvalidApiVersionParameter");
        let e = err(Method::POST, P, Some(V));
        assert_eq!((e.status, e.code.as_str()), (405, "MethodNotAllowed"));
        assert_eq!(err(Method::GET, &format!("{P}/start"), Some(V)).status, 405);
        assert_eq!(err(Method::GET, "/nope", Some(V)).status, 404);
        assert_eq!(err(Method::GET, "/", Some(V)).status, 404);
        assert_eq!(err(Method::GET, &format!("{P}/bogus"), Some(V)).code, "InvalidResourceType");
        assert_eq!(err(Method::GET, "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/x", Some(V)).code, "InvalidResourceNamespace");
        assert_eq!(err(Method::GET, &format!("{P}/containers/c/logs"), Some("api-version=2023-05-01&tail=-1")).status, 400);
        assert_eq!(err(Method::GET, &format!("{P}/containers/c/logs"), Some("api-version=2023-05-01&timestamps=maybe")).status, 400);
        assert_eq!(err(Method::GET, "/subscriptions/s/resourcegroups/bad%2Fname", Some(V)).code, "InvalidResourceGroupName");
        assert_eq!(err(Method::GET, "/subscriptions/s/providers/Microsoft.ContainerInstance/containerGroups", Some("api-version=2023-05-01&$top=0")).status, 400);
    }

    #[test]
    fn group_metrics_route() {
        let r = parse(&Method::GET, &format!("{P}/providers/microsoft.insights/Metrics"), Some("api-version=2018-01-01&metricnames=CpuUsage,MemoryUsage&interval=PT1M")).unwrap();
        assert_eq!(r.route, Route::GroupMetrics { group: gr(), metric_names: Some("CpuUsage,MemoryUsage".into()), interval: Some("PT1M".into()) });
        assert!(parse(&Method::GET, &format!("{P}/providers/Microsoft.Insights/metrics"), Some(V)).is_ok());
        assert_eq!(err(Method::POST, &format!("{P}/providers/Microsoft.Insights/metrics"), Some(V)).status, 405);
        assert_eq!(err(Method::GET, &format!("{P}/providers/Microsoft.Insights/other"), Some(V)).code, "InvalidResourceType");
    }

    #[test]
    fn network_routes() {
        let v = VnetRef { subscription: "Sub".into(), resource_group: "Demo".into(), name: "Net1".into() };
        let base = "/subscriptions/Sub/resourceGroups/Demo/providers/Microsoft.Network/virtualNetworks/Net1";
        let q = Some("api-version=2023-09-01");
        assert_eq!(parse(&Method::PUT, base, q).unwrap().route, Route::PutVirtualNetwork(v.clone()));
        assert_eq!(parse(&Method::GET, &base.to_ascii_lowercase().replace("demo", "Demo").replace("net1", "Net1").replace("sub/", "Sub/"), q).unwrap().route, Route::GetVirtualNetwork(v.clone()));
        assert_eq!(parse(&Method::DELETE, base, q).unwrap().route, Route::DeleteVirtualNetwork(v.clone()));
        let sn = format!("{base}/subnets/S1");
        assert_eq!(parse(&Method::PUT, &sn, q).unwrap().route, Route::PutSubnet { vnet: v.clone(), subnet: "S1".into() });
        assert_eq!(parse(&Method::GET, &sn, q).unwrap().route, Route::GetSubnet { vnet: v.clone(), subnet: "S1".into() });
        assert_eq!(parse(&Method::DELETE, &sn, q).unwrap().route, Route::DeleteSubnet { vnet: v, subnet: "S1".into() });
        assert_eq!(err(Method::POST, &sn, q).status, 405);
        assert_eq!(err(Method::GET, &format!("{base}/peerings/x"), q).status, 404);
        assert_eq!(err(Method::GET, base, None).code, "MissingApiVersionParameter");
    }

    proptest! {
        #[test]
        fn never_panics(path in "(/|[a-zA-Z.%0-9]{0,12}|subscriptions|resourceGroups|providers|Microsoft.ContainerInstance|containerGroups|locations|containers|logs){0,14}",
                        query in proptest::option::of(".{0,40}"),
                        method in prop::sample::select(vec![Method::GET, Method::PUT, Method::POST, Method::PATCH, Method::DELETE, Method::HEAD, Method::OPTIONS])) {
            if let Err(e) = parse(&method, &path, query.as_deref()) {
                prop_assert!((400..500).contains(&e.status));
            }
        }

        #[test]
        fn structured_paths_never_panic(parts in proptest::collection::vec(prop::sample::select(vec![
            "subscriptions", "s", "resourceGroups", "rg", "providers", "Microsoft.ContainerInstance", "containerGroups", "g",
            "containers", "c", "logs", "exec", "locations", "westus", "operations", "operationResults", "usages", "", "%2F", "%ff",
        ]), 0..12)) {
            let path = format!("/{}", parts.join("/"));
            for m in [Method::GET, Method::PUT, Method::POST, Method::DELETE] {
                let _ = parse(&m, &path, Some("api-version=2023-05-01&tail=3"));
            }
        }
    }
}
