{#- The incremental patent models (int_patent_ipc_codes_flagged, int_patents_key_tech_flagged,
    selected unchanged by the marts fct_patent_ipc_codes and fct_patents): append-only incremental
    models whose pre-hook, on a refresh, deletes the rows of patents that are no longer kept or
    that this run re-dispositions (int_patents_dispositioned._batch_id = this invocation), so
    that the model's append of this run's batch replaces them; a no-op on a full build.
    docs/performance.md, "Incremental refresh". -#}
{% macro incremental_patent_model_config() %}
    {{ config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{{ delete_redispositioned_patents() }}",
    ) }}
{% endmacro %}

{% macro delete_redispositioned_patents() %}
    {% if is_incremental() %}
    delete from {{ this }} as previous
    where not exists (
        select 1
        from {{ ref('int_patents_dispositioned') }} as dispositioned
        where dispositioned.patent_id = previous.patent_id
            and dispositioned.disposition = 'kept'
            and dispositioned._batch_id <> '{{ invocation_id }}'
    )
    {% endif %}
{% endmacro %}
