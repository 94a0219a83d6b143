-- hold the rollout at its current step (kubectl gptd pause)
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["serving.gpt-operator.dev/paused"] = "true"
return obj
