from feast import FeatureService

from features.feature_views import embedded_items, item_embeddings, user_recent_items

recommender = FeatureService(
    name="llmseqrec_recommender",
    features=[item_embeddings, embedded_items, user_recent_items],
    description="Everything the sequential recommender reads: item embeddings, the items "
                "embedded per version (new items are served from them) and user histories",
)
