// Preloaded into Artillery (`node --require`, by scripts/artillery.sh): Artillery 2.0.21 sends a telemetry event to
// app.posthog.com on every run, even with ARTILLERY_DISABLE_TELEMETRY set (then anonymised, but still a request off
// the host, and about 12 s of retries at exit where there is no network). Its PostHog client is swapped here for one
// that sends nothing; nothing else is touched.
'use strict';

const Module = require('module');

class PostHog {
  capture() {}

  async shutdownAsync() {}
}

const load = Module._load;
Module._load = function loadWithoutTelemetry(request, ...rest) {
  return request === 'posthog-node' ? { PostHog } : load.call(this, request, ...rest);
};
