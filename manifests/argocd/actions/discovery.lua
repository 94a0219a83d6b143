-- Which GPTDeployment actions Argo CD offers, from the status the operator writes. Like kubectl gptd, each action
-- only writes an annotation (serving.gpt-operator.dev/...); the operator acts on it.
local actions = {}
local status = obj.status or {}
local annotations = obj.metadata.annotations or {}
local paused = annotations["serving.gpt-operator.dev/paused"] == "true"
-- a rollout is under way while the revision the spec asks for is not yet the stable one, and was not aborted
local rolling = status.updateRevision ~= nil and status.updateRevision ~= status.stableRevision
  and status.abortedRevision ~= status.updateRevision
actions["promote"] = {["disabled"] = not rolling, ["displayName"] = "Promote (next step)"}
actions["promote-full"] = {["disabled"] = not rolling, ["displayName"] = "Promote (full)"}
actions["abort"] = {["disabled"] = not rolling}
actions["retry"] = {["disabled"] = status.abortedRevision == nil}
actions["pause"] = {["disabled"] = paused}
actions["resume"] = {["disabled"] = not paused}
actions["wake"] = {["disabled"] = status.phase ~= "Sleeping", ["displayName"] = "Wake (2h)"}
return actions
