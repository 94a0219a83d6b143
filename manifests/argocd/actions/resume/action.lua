-- continue a paused rollout (kubectl gptd resume): the paused annotation is removed
if obj.metadata.annotations ~= nil then
  obj.metadata.annotations["serving.gpt-operator.dev/paused"] = nil
end
return obj
