-- Argo CD health of a GPTDeployment, from the conditions and phase the operator writes.
-- Healthy: Ready. Suspended: asleep (schedule or spec.suspend) or a paused rollout. Degraded: the Degraded
-- condition (invalid spec, aborted rollout, stuck Deployment). Progressing: anything else, including a spec
-- the operator has not observed yet.
local hs = {}
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the latest spec"
  return hs
end
local conditions = {}
for _, condition in ipairs(obj.status.conditions) do
  conditions[condition.type] = condition
end
local phase = obj.status.phase
if conditions.Degraded ~= nil and conditions.Degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = conditions.Degraded.reason .. ": " .. conditions.Degraded.message
  return hs
end
if phase == "Sleeping" then
  hs.status = "Suspended"
  hs.message = conditions.Sleeping ~= nil and conditions.Sleeping.message or "Sleeping"
  return hs
end
if phase == "Paused" then
  hs.status = "Suspended"
  hs.message = conditions.Progressing ~= nil and conditions.Progressing.message or "Rollout paused"
  return hs
end
if conditions.Ready ~= nil and conditions.Ready.status == "True" then
  hs.status = "Healthy"
  hs.message = conditions.Ready.message
  return hs
end
hs.status = "Progressing"
if conditions.Progressing ~= nil then
  hs.message = conditions.Progressing.message
else
  hs.message = "Waiting for replicas"
end
return hs
