-- one-shot: run the aborted revision again from the first step (kubectl gptd retry)
local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["serving.gpt-operator.dev/retry"] = os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
