-- one-shot: the next canary step (kubectl gptd promote); the time makes each request a new one
local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["serving.gpt-operator.dev/promote"] = "step@" .. os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
