-- one-shot: back to the stable revision (kubectl gptd abort)
local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["serving.gpt-operator.dev/abort"] = os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
