from feast import Entity, ValueType

item = Entity(
    name="item",
    join_keys=["item_id"],
    value_type=ValueType.INT64,
    description="A catalog item, by its catalog id",
)

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.INT64,
    description="A user, by the id of the interaction log",
)

embedding_recipe = Entity(
    name="embedding_recipe",
    join_keys=["recipe"],
    value_type=ValueType.STRING,
    description="An embedding version: the encoder and text recipe item vectors were made with",
)
