-- one-shot: skip the remaining steps (kubectl gptd promote --full)
local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["serving.gpt-operator.dev/promote"] = "full@" .. os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
