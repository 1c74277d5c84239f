"""The service layer: one module per pipeline step, driving the domain through the ports.

- `admit_build.admit_build`: validate a build-succeeded message, version it, record the release
  and the deployment, take the environment lock or queue (newest wins); `reject_build_event`
  records and announces bad input.
- `provision.start_rolling_replace`: the release's instance template and green MIG, then
  `cooling_down` (the record holds when the cool-down ends) and a `cool-down-complete` message.
- `switch.complete_cool_down`: `NotReadyYet` until green is healthy and the cool-down is over;
  then attach green, detach the rest, `live`, retire blue, hand the lock over, notify.
  `switch.judge_green` is its verdict on green (wait, fail, switch), which the watchdog shares.
- `lifecycle.fail_deployment`: `failed`, hand the lock over, notify, then delete green.
- `watchdog.run_watchdog`: deadlines, stalled steps, lost hand-overs, deferred blue cleanup.
- `rollback.request_rollback`: republish the target release's event as a new build.
- `promote.request_promotion`: the same for a release live upstream, into the next environment.
- `release_requests.request_redeploy`: what both share: record the request, publish the event.
- `approval.decide`: an approver's decision on a deployment awaiting approval.
- `dead_letter.record_dead_letter`: record and announce an event that exhausted its retries.
- `notify.notify_team`: enrich a notify event from the records, deliver it once per channel.
"""
