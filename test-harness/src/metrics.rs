//! Reading a process's `GET /metrics` as a scraper does, with a strict
//! OpenMetrics parser (`openmetrics-parser`, which passes the OpenMetrics
//! conformance suite): an exposition that a scraper would refuse fails the
//! test, and the values are read by family, type and labels rather than
//! by matching text.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use openmetrics_parser::{
    MetricFamily, MetricsExposition, OpenMetricsValue, openmetrics::parse_openmetrics,
};
use tokio::time::timeout;

pub use openmetrics_parser::OpenMetricsType;

use crate::{STEP, raw_client};

type Family = MetricFamily<OpenMetricsType, OpenMetricsValue>;

/// One scrape, parsed.
pub struct Scrape {
    exposition: MetricsExposition<OpenMetricsType, OpenMetricsValue>,
    /// The text as served, shown when an expectation fails.
    pub text: String,
}

/// Scrapes `http://<address>/metrics`; panics unless it is served as
/// OpenMetrics text that parses.
pub async fn scrape(address: SocketAddr) -> Scrape {
    let request = Request::builder()
        .method(Method::GET)
        .uri(format!("http://{address}/metrics"))
        .body(Full::new(Bytes::new()))
        .expect("a valid request");
    let response = timeout(STEP, raw_client(false).request(request))
        .await
        .expect("no hang")
        .expect("the metrics listener answers");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "served as {content_type:?}"
    );
    let body = timeout(STEP, response.into_body().collect())
        .await
        .expect("no hang")
        .expect("a body")
        .to_bytes();
    let text = String::from_utf8(body.to_vec()).expect("the exposition is UTF-8");
    let exposition = parse_openmetrics(&text)
        .unwrap_or_else(|error| panic!("not valid OpenMetrics ({error:?}):\n{text}"));
    Scrape { exposition, text }
}

impl Scrape {
    /// The family `name` (a counter's name is without `_total`).
    pub fn family(&self, name: &str) -> &Family {
        self.exposition
            .families
            .get(name)
            .unwrap_or_else(|| panic!("no metric family {name}:\n{}", self.text))
    }

    /// Whether the family `name` is exposed, with `kind`.
    pub fn has(&self, name: &str, kind: OpenMetricsType) -> bool {
        self.exposition
            .families
            .get(name)
            .is_some_and(|family| family.family_type == kind)
    }

    /// The labels and value of every series of `name` whose labels include
    /// all of `labels`.
    pub fn series(
        &self,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Vec<(HashMap<String, String>, &OpenMetricsValue)> {
        let family = self.family(name);
        let names = family.get_label_names();
        family
            .iter_samples()
            .filter_map(|sample| {
                let set = sample
                    .get_labelset()
                    .expect("a sample has its family's labels");
                let values: HashMap<String, String> = names
                    .iter()
                    .map(|name| {
                        let value = set.get_label_value(name).unwrap_or_default();
                        (name.clone(), value.to_owned())
                    })
                    .collect();
                labels
                    .iter()
                    .all(|(name, value)| values.get(*name).map(String::as_str) == Some(*value))
                    .then_some((values, &sample.value))
            })
            .collect()
    }

    /// The sum of the counter `name` over the series matching `labels` (0
    /// when none: a counter that never moved has no series).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series(name, labels)
            .into_iter()
            .map(|(_, value)| match value {
                OpenMetricsValue::Counter(counter) => counter.value.as_f64(),
                other => panic!("{name} is not a counter: {other:?}"),
            })
            .sum()
    }

    /// The value of the gauge `name` of the one series matching `labels`.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let series = self.series(name, labels);
        assert_eq!(
            series.len(),
            1,
            "one {name} series for {labels:?}:\n{}",
            self.text
        );
        match series[0].1 {
            OpenMetricsValue::Gauge(value) => value.as_f64(),
            other => panic!("{name} is not a gauge: {other:?}"),
        }
    }

    /// How many observations the histogram `name` counted over the series
    /// matching `labels`; checks each series' `+Inf` bucket agrees.
    pub fn histogram_count(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.series(name, labels)
            .into_iter()
            .map(|(_, value)| match value {
                OpenMetricsValue::Histogram(histogram) => {
                    let count = histogram.count.expect("a histogram has a count");
                    let infinite = histogram
                        .buckets
                        .iter()
                        .find(|bucket| bucket.upper_bound == f64::INFINITY)
                        .expect("a +Inf bucket");
                    assert_eq!(
                        infinite.count.as_f64(),
                        count as f64,
                        "{name}: +Inf != count"
                    );
                    count
                }
                other => panic!("{name} is not a histogram: {other:?}"),
            })
            .sum()
    }

    /// Every value the label `label` takes in the family `name`.
    pub fn label_values(&self, name: &str, label: &str) -> BTreeSet<String> {
        self.series(name, &[])
            .into_iter()
            .filter_map(|(mut labels, _)| labels.remove(label))
            .collect()
    }
}
